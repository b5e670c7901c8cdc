"""The annotator's rules that are written twice: in Python (``app.queue``, ``app.annotations``,
``app.auth``, ``app.projects``; SQLite, and Postgres without the hot path) and in the
hot path's SQL (``app/fastpath/sql``). Each id is tagged where each language applies the
rule and on a test that runs both ways (``pytest.mark.rules``);
``tests/unit/test_rule_catalogue.py`` checks that all three exist, and
``tests/api/test_hot_path_differential.py`` runs both against the same random operations.
"""

from __future__ import annotations

RULES = {
    "R-TOKEN": "a token that is unknown, revoked, expired or of a disabled account is a 401",
    "R-VISIBLE": "a project (an item's project) is visible to admins and members, else 404",
    "R-LEASE-SWEEP": "every `next` first closes leases past their expiry (outcome expired, "
    "SKIP LOCKED) and gives their slots back, entry by entry in id order",
    "R-LEASE-HELD": "asking again returns the caller's live leases in this project, oldest first",
    "R-BUDGET": "no new lease once labels spent + open leases reach the budget (relabel_budget "
    "when cleaning): budget_spent, or what is already held",
    "R-PICK-ORDER": "the new lease goes to the open entry of a labelling cycle with a free slot, "
    "lowest (rank, id), that the caller has not labelled, skipped or holding; locked, "
    "rows others hold skipped",
    "R-LEASE": "a lease expires lease_seconds after now and takes one of the entry's slots",
    "R-QUEUE-EMPTY": "no entry to lease and none held: queue_empty with the latest cycle",
    "R-CLASS-RANGE": "class_index outside 0…classes−1 is a 422 wrong_class, checked first",
    "R-REPLAY": "a resent idempotency key returns the stored label (200), also when a "
    "concurrent resend won; another item or class under that key is 409 "
    "idempotency_key_reused",
    "R-TEST-ITEM": "a test-split item is a 409 test_item (labelled by import only)",
    "R-ONE-LABEL": "one live human label per annotator and item: 409 already_labelled",
    "R-NOT-LEASED": "a label needs the caller's live lease on the item: 409 lease_expired "
    "when their last lease on it expired, else 409 not_leased",
    "R-COUNT-LABEL": "the label closes the lease (labelled), frees its slot, counts on the "
    "entry, and the entry is done once it has the labels it wants",
    "R-MAJORITY": "cleaning (not activelab): an item stays queued one label at a time until "
    "its live votes have a strict majority",
    "R-STOP-DECIDED": "an entry is done early when the lead cannot be overturned by the labels "
    "it still wants (stop_when_decided) or reaches its stop_lead",
    "R-SPEND": "each label spends one of the budget in one conditional update: past it, 409 "
    "budget_spent and nothing stored",
    "R-ADVANCE": "the label that finishes the cycle's last open entry asks for the advance task",
    "R-REFRESH": "otherwise, every finetune_every labels spent ask for a cleaning refresh",
}
