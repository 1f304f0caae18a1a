"""admit.lua and settle.lua run directly against Redis: a window's running total stays its buckets' sum."""

from __future__ import annotations

from budgets.counters import ADMIT, SETTLE, key_prefix

T0 = 1_800_000_000  # a whole second


def window(client, key: str) -> tuple[int, int]:
    """(the running total, the sum of the buckets still in the window)."""
    fields = {name.decode(): int(value) for name, value in client.hgetall(key).items()}
    total = fields.pop("t", 0)
    fields.pop("o", None)
    return total, sum(fields.values())


def admit(client, key: str, *, at: int, limit: int, amount: int) -> list:
    return ADMIT.run_sync(client, [key], [at * 1000, at, "r", limit, amount, "", 0])


def test_the_running_total_follows_admissions_evictions_and_settlements(limits_redis):
    key = f"{key_prefix()}:tpm:1:w"
    for second, amount in ((0, 10), (0, 5), (20, 7), (59, 3)):
        assert admit(limits_redis, key, at=T0 + second, limit=100, amount=amount)[0] == 0
    assert window(limits_redis, key) == (25, 25)
    # A settlement gives 4 tokens back to second 20's bucket, and can take no more than a bucket holds.
    SETTLE.run_sync(limits_redis, [key, key], ["t", T0 + 20, -4, 0, "", "t", T0 + 59, -50, 0, ""])
    assert window(limits_redis, key) == (18, 18)
    # Second 60: second 0 (15 tokens) has left the window.
    used = admit(limits_redis, key, at=T0 + 60, limit=100, amount=1)
    assert used[:3] == [0, 0, 4]
    assert window(limits_redis, key) == (4, 4)
    # A settlement for a bucket that has left the window changes nothing.
    SETTLE.run_sync(limits_redis, [key], ["t", T0, 9, 0, ""])
    assert window(limits_redis, key) == (4, 4)


def test_a_refusal_counts_nothing_and_says_when_enough_leaves_the_window(limits_redis):
    key = f"{key_prefix()}:rpm:2:w"
    admit(limits_redis, key, at=T0, limit=2, amount=1)
    admit(limits_redis, key, at=T0 + 10, limit=2, amount=1)
    refused = admit(limits_redis, key, at=T0 + 30, limit=2, amount=1)
    assert refused == [1, 30_000, 2, 60_000, 0]  # second 0 leaves the window at second 60; nothing counted
    assert window(limits_redis, key) == (2, 2)


def test_a_window_kept_as_buckets_alone_is_totalled_once(limits_redis):
    # What an earlier version left: buckets without a running total, one already out of the window.
    key = f"{key_prefix()}:rpm:3:w"
    limits_redis.hset(key, mapping={str(T0 - 70): 9, str(T0 - 10): 4, str(T0): 2})
    assert admit(limits_redis, key, at=T0, limit=7, amount=1)[:3] == [0, 0, 7]
    assert window(limits_redis, key) == (7, 7)
    assert admit(limits_redis, key, at=T0, limit=7, amount=1)[0] == 1


def test_counters_expire_when_nothing_in_them_can_matter(limits_redis):
    window_key, budget_key = f"{key_prefix()}:rpm:4:w", f"{key_prefix()}:budget:4:2026-12"
    expire_at = T0 + 40 * 86400

    def admit_both(at: int) -> list:
        arguments = [at * 1000, at, "r", 100, 1, "", 0, "b", 10**12, 500, f"h{expire_at}", 0]
        return ADMIT.run_sync(limits_redis, [window_key, budget_key], arguments)

    assert admit_both(T0)[0] == 0
    assert 60_000 < limits_redis.pttl(window_key) <= 61_000
    assert limits_redis.expiretime(budget_key) == expire_at
    limits_redis.pexpire(window_key, 30_000)
    limits_redis.persist(budget_key)
    # Again within the same second: the window's expiry was set by that second's first admission,
    # and the budget's when its counter was made.
    assert admit_both(T0)[0] == 0
    assert limits_redis.pttl(window_key) <= 30_000
    assert limits_redis.ttl(budget_key) == -1
    # The next second's first admission moves the window's expiry on.
    assert admit_both(T0 + 1)[:4] == [0, 0, 3, 60_000]
    assert 60_000 < limits_redis.pttl(window_key) <= 61_000
    assert window(limits_redis, window_key) == (3, 3)
    assert limits_redis.hget(budget_key, "reserved") == b"1500"


def test_a_record_that_cannot_be_priced_does_not_hold_the_settler(limits_redis, caplog):
    from budgets import plans, settlement
    from budgets.enforcement import Admission, Check

    class Unpriceable:
        id = "unpriceable-record"

        def billed(self):
            raise ValueError("no usage to read")

    budget = plans.Rule(1, "budget", "org", 10**9, "month")
    admission = Admission((Check(budget, f"{key_prefix()}:budget:1:x"),), (5,), T0, 1)
    settlement.hold(Unpriceable(), admission)
    settlement.record_logged(Unpriceable(), None)
    assert settlement.settler.pending == 0
    assert "could not settle request unpriceable-record" in caplog.text
