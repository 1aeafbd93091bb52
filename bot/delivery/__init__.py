"""Delivery: each update's deadline, its redelivery when polling, paced Bot API calls."""
