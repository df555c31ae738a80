"""Records held in memory until the state store takes them."""

from __future__ import annotations

from crisiswatch.notify.held import Held
from crisiswatch.store import StoreError


def test_the_newest_per_key_at_most_the_limit() -> None:
    held: Held[str, int] = Held(2)
    held.put("a", 1)
    held.put("b", 2)
    held.put("a", 3)  # put again: now the newest
    held.put("c", 4)  # past the limit: the least recently put ("b") goes
    assert list(held.values()) == [3, 4] and "b" not in held and held.get("a") == 3


async def test_written_back_oldest_first_until_the_store_refuses() -> None:
    held: Held[str, int | None] = Held(10)
    for key, value in (("a", 1), ("b", None), ("c", 3)):
        held.put(key, value)
    written: list[tuple[str, int | None]] = []

    async def write(key: str, value: int | None) -> None:
        if key == "c" and len(written) < 3:
            written.append(("refused", None))
            raise StoreError("state store write failed: database or disk is full")
        written.append((key, value))

    await held.write_back(write)
    assert written == [("a", 1), ("b", None), ("refused", None)] and list(held.values()) == [3]
    await held.write_back(write)
    assert written[-1] == ("c", 3) and len(held) == 0


async def test_a_record_put_again_while_written_stays_to_be_written() -> None:
    held: Held[str, int] = Held(10)
    held.put("a", 1)
    written: list[int] = []

    async def write(key: str, value: int) -> None:
        written.append(value)
        if value == 1:
            held.put("a", 2)  # a newer record of it came meanwhile

    await held.write_back(write)
    assert written == [1, 2] and len(held) == 0
