"""BOTS_DIR as a Kubernetes Secret volume lays it out, and every way a file can be wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.bots_dir import read_bots_dir

TOKEN_A = "111111:AAtokenOfBotA_abcdefghijklmno"
TOKEN_B = "222222:BBtokenOfBotB_abcdefghijklmno"


def bot_file(token: str = TOKEN_A, secret: str = "secret-a", **extra: str) -> str:
    lines = [f"BOT_TOKEN={token}", f"WEBHOOK_SECRET={secret}"]
    return "\n".join([*lines, *(f"{k}={v}" for k, v in extra.items())]) + "\n"


def test_a_secret_volume_gives_one_bot_per_key(tmp_path: Path) -> None:
    # What the kubelet writes: the data in a timestamped folder, `..data` pointing at it, and
    # one symlink per key through `..data`.
    data = tmp_path / "..2026_11_27_10_00_00.123"
    data.mkdir()
    (data / "shop.env").write_text(bot_file())
    (data / "news-2.env").write_text(bot_file(TOKEN_B, "secret-b"))
    (tmp_path / "..data").symlink_to(data.name)
    for name in ("shop.env", "news-2.env"):
        (tmp_path / name).symlink_to(f"..data/{name}")

    snapshot = read_bots_dir(tmp_path)
    assert snapshot.problems == {}
    assert sorted(snapshot.bots) == ["news-2", "shop"]
    shop = snapshot.bots["shop"]
    assert (shop.bot_id, shop.secret.get_secret_value()) == (111111, "secret-a")
    assert snapshot.bots["news-2"].bot_id == 222222


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("Shop.env", bot_file(), "lowercase"),
        ("shop.txt", bot_file(), "<name>.env"),
        ("a" * 41 + ".env", bot_file(), "at most 40"),
        ("shop.env", "BOT_TOKEN=" + TOKEN_A + "\n", "WEBHOOK_SECRET is missing"),
        ("shop.env", "WEBHOOK_SECRET=s\n", "BOT_TOKEN is missing"),
        ("shop.env", bot_file(token="111111:short"), "BOT_TOKEN must look like"),
        ("shop.env", bot_file(secret="has space"), "WEBHOOK_SECRET must be"),
        ("shop.env", bot_file(DATABASE_URL="sqlite://"), "DATABASE_URL apply to the host"),
    ],
)
def test_a_file_that_defines_no_bot_is_reported_and_skipped(
    tmp_path: Path, name: str, content: str, reason: str
) -> None:
    (tmp_path / name).write_text(content)
    (tmp_path / "news.env").write_text(bot_file(TOKEN_B, "secret-b"))
    snapshot = read_bots_dir(tmp_path)
    assert list(snapshot.bots) == ["news"]  # the others keep serving
    assert reason in snapshot.problems[name]
    assert "short" not in snapshot.problems[name]  # a malformed token is still not echoed


def test_two_files_with_one_token_define_one_bot(tmp_path: Path) -> None:
    (tmp_path / "first.env").write_text(bot_file())
    (tmp_path / "second.env").write_text(bot_file(secret="other"))
    snapshot = read_bots_dir(tmp_path)
    assert list(snapshot.bots) == ["first"]
    assert snapshot.problems == {"second.env": "the same bot (token) as first.env"}


def test_dot_files_and_folders_are_not_bots(tmp_path: Path) -> None:
    (tmp_path / ".hidden.env").write_text("garbage")
    (tmp_path / "folder.env").mkdir()
    assert read_bots_dir(tmp_path).problems == {}


def test_a_missing_directory_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    snapshot = read_bots_dir(tmp_path / "nope")
    assert snapshot.bots == {}
    assert "FileNotFoundError" in snapshot.problems[str(tmp_path / "nope")]
