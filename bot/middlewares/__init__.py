"""aiogram middlewares; each does one job and puts what it provides into handler data."""
