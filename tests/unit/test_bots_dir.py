"""BOTS_DIR as a Kubernetes Secret volume lays it out, and every way a file can be wrong."""

from __future__ import annotations

import os
import shutil
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from bot.hosting.bots_dir import MAX_BOT_FILE_BYTES, BotsSnapshot, read_bots_dir

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

    # An update, as the kubelet makes it: a new folder, `..data` swapped to it atomically, the
    # old folder removed. The links stay inside the directory: still read.
    update = tmp_path / "..2026_11_27_11_00_00.456"
    update.mkdir()
    (update / "shop.env").write_text(bot_file(secret="secret-a2"))
    (update / "news-2.env").write_text(bot_file(TOKEN_B, "secret-b"))
    (tmp_path / "..data_tmp").symlink_to(update.name)
    (tmp_path / "..data_tmp").rename(tmp_path / "..data")
    shutil.rmtree(data)
    snapshot = read_bots_dir(tmp_path)
    assert snapshot.problems == {}
    assert snapshot.bots["shop"].secret.get_secret_value() == "secret-a2"


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


@pytest.mark.parametrize("newcomer", ["a-copy", "zz-copy"])
def test_a_token_claimed_by_a_second_file_stays_with_its_current_owner(
    tmp_path: Path, newcomer: str
) -> None:
    (tmp_path / "shop.env").write_text(bot_file())
    (tmp_path / f"{newcomer}.env").write_text(bot_file(secret="other"))
    snapshot = read_bots_dir(tmp_path, owners={111111: "shop"})
    assert list(snapshot.bots) == ["shop"]
    assert snapshot.bots["shop"].secret.get_secret_value() == "secret-a"
    assert snapshot.problems == {f"{newcomer}.env": "the same bot (token) as shop.env"}


def test_a_token_of_two_files_and_no_owner_goes_to_neither(tmp_path: Path) -> None:
    """At start-up nothing tells the owner from a copy: neither serves, both are reported."""
    (tmp_path / "first.env").write_text(bot_file())
    (tmp_path / "second.env").write_text(bot_file(secret="other"))
    (tmp_path / "news.env").write_text(bot_file(TOKEN_B, "secret-b"))
    # The owner of that token left (its file now has another token): no owner either.
    snapshot = read_bots_dir(tmp_path, owners={111111: "gone"})
    assert list(snapshot.bots) == ["news"]
    assert snapshot.problems == {
        "first.env": "the same bot (token) as second.env",
        "second.env": "the same bot (token) as first.env",
    }


def test_dot_files_and_folders_are_not_bots(tmp_path: Path) -> None:
    (tmp_path / ".hidden.env").write_text("garbage")
    (tmp_path / "folder.env").mkdir()
    assert read_bots_dir(tmp_path).problems == {}


def test_a_missing_directory_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    snapshot = read_bots_dir(tmp_path / "nope")
    assert snapshot.bots == {}
    assert "FileNotFoundError" in snapshot.problems[str(tmp_path / "nope")]


def read_in_time(directory: Path, **kwargs: Any) -> BotsSnapshot:
    """read_bots_dir in a daemon thread: a read that hangs fails the test instead of the run."""
    result: list[BotsSnapshot] = []
    reader = threading.Thread(
        target=lambda: result.append(read_bots_dir(directory, **kwargs)), daemon=True
    )
    reader.start()
    reader.join(timeout=10)
    assert result, "read_bots_dir did not return within 10 s"
    return result[0]


def test_a_fifo_socket_or_device_is_refused_without_being_opened(tmp_path: Path) -> None:
    (tmp_path / "shop.env").write_text(bot_file())
    os.mkfifo(tmp_path / "zzz.env")  # opened for reading, it would wait for a writer for good
    (tmp_path / "zero.env").symlink_to("/dev/zero")  # endless, and outside the directory
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(tmp_path / "sock.env"))
        snapshot = read_in_time(tmp_path)
    assert list(snapshot.bots) == ["shop"]
    assert snapshot.problems["zzz.env"] == "not a regular file"
    assert snapshot.problems["sock.env"] == "not a regular file"
    assert snapshot.problems["zero.env"] == "a symlink that leaves the directory"


def test_a_symlink_out_of_the_directory_is_refused(tmp_path: Path) -> None:
    bots, elsewhere = tmp_path / "bots", tmp_path / "elsewhere"
    bots.mkdir()
    elsewhere.mkdir()
    (elsewhere / "shop.env").write_text(bot_file())
    (bots / "shop.env").symlink_to(elsewhere / "shop.env")
    (bots / "up.env").symlink_to("../elsewhere/shop.env")
    (bots / "loop.env").symlink_to("loop.env")
    (bots / "dangling.env").symlink_to("..data/dangling.env")
    snapshot = read_in_time(bots)
    assert snapshot.bots == {}
    assert snapshot.problems["shop.env"] == "a symlink that leaves the directory"
    assert snapshot.problems["up.env"] == "a symlink that leaves the directory"
    assert snapshot.problems["loop.env"].startswith("cannot read it: ")
    assert snapshot.problems["dangling.env"] == "cannot read it: FileNotFoundError"


def test_a_file_over_the_size_cap_is_refused(tmp_path: Path) -> None:
    (tmp_path / "big.env").write_text(bot_file() + "#" * MAX_BOT_FILE_BYTES)
    (tmp_path / "shop.env").write_text(bot_file(TOKEN_B) + "# a comment\n")
    snapshot = read_in_time(tmp_path)
    assert list(snapshot.bots) == ["shop"]
    assert snapshot.problems["big.env"] == f"over {MAX_BOT_FILE_BYTES} bytes"
