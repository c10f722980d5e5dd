"""The routing rule matcher and validator, without a database."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from gateway.payments.rules import (
    AdapterInfo,
    PaymentFacts,
    RuleSet,
    SchoolFacts,
    TimeWindow,
    first_match,
    funding_kind_for_card,
    strictest_code,
    validate_rules,
)

pytestmark = pytest.mark.unit

SHANGHAI = ZoneInfo("Asia/Shanghai")
ECARD = AdapterInfo(frozenset({"card"}), frozenset({"ecard_account"}), configured=True)
BANK = AdapterInfo(frozenset({"card"}), frozenset({"bank_agreement"}), configured=True)
ALIPAY = AdapterInfo(frozenset({"face"}), frozenset({"alipay_account"}), configured=True)


def facts(face: bool = True, bins: tuple[str, ...] = ()) -> SchoolFacts:
    adapters = {
        "ecard": ECARD,
        "ecard-b": ECARD,
        "bank": BANK,
        "alipay": AdapterInfo(ALIPAY.methods, ALIPAY.funding, configured=face),
        "spare": AdapterInfo(frozenset({"card"}), frozenset({"ecard_account"}), configured=False),
    }
    in_use = frozenset({"ecard_account", "bank_agreement"} if bins else {"ecard_account"})
    return SchoolFacts(adapters=adapters, co_branded_bins=bins, funding_in_use=in_use)


def pay(**kw: object) -> PaymentFacts:
    values: dict[str, object] = {
        "method": "card",
        "amount": 1000,
        "merchant_category": "canteen",
        "local_time": datetime(2026, 3, 2, 12, 0, tzinfo=SHANGHAI),  # a Monday
        "card_bin": "31000001",
        "card_type": "campus",
        "funding": "ecard_account",
    }
    values.update(kw)
    return PaymentFacts(**values)  # type: ignore[arg-type]


def rules(*items: dict[str, object]) -> RuleSet:
    return RuleSet.model_validate({"rules": list(items)})


def test_first_matching_rule_wins_and_earlier_misses_are_explained() -> None:
    rs = rules(
        {"name": "big", "method": "card", "amount_min": 5000, "adapters": ["ecard-b"]},
        {"name": "shop", "method": "card", "merchant_categories": ["shop"], "adapters": ["ecard-b"]},
        {"name": "cards", "method": "card", "adapters": ["ecard"]},
    )
    match = first_match(rs.rules, pay())
    assert match.index == 2 and match.rule is not None and match.rule.adapters == ["ecard"]
    assert [e["matched"] for e in match.explanations] == [False, False, True]
    assert "below amount_min 5000" in match.explanations[0]["reason"]
    assert "not in ['shop']" in match.explanations[1]["reason"]
    assert first_match(rs.rules, pay(amount=5000)).index == 0


def test_bins_card_type_and_method() -> None:
    rs = rules(
        {"method": "card", "card_bins": ["6228"], "adapters": ["bank"]},
        {"method": "card", "card_type": "co_branded", "adapters": ["bank"]},
        {"method": "face", "adapters": ["alipay"]},
    )
    assert first_match(rs.rules, pay(card_bin="6228480012345678")).index == 0
    assert first_match(rs.rules, pay(card_bin="6229", card_type="co_branded")).index == 1
    assert first_match(rs.rules, pay(method="face", card_bin=None, card_type=None)).index == 2
    assert first_match(rs.rules, pay()).index is None  # falls to the default route


@pytest.mark.parametrize(
    ("start", "end", "days", "at", "inside"),
    [
        ("11:00", "13:00", None, (12, 0), True),
        ("11:00", "13:00", None, (13, 0), False),  # the end is exclusive
        ("22:00", "06:00", None, (23, 30), True),  # wraps midnight
        ("22:00", "06:00", None, (5, 59), True),
        ("22:00", "06:00", None, (12, 0), False),
        ("00:00", "23:59", [6, 7], (12, 0), False),  # Monday is not a weekend day
    ],
)
def test_time_window(start: str, end: str, days: list[int] | None, at: tuple[int, int], inside: bool) -> None:
    window = TimeWindow(start=start, end=end, days=days)
    assert window.contains(datetime(2026, 3, 2, *at, tzinfo=SHANGHAI)) is inside


def test_a_valid_rule_set_has_no_reasons() -> None:
    rs = rules(
        {"method": "card", "amount_min": 5000, "adapters": ["ecard-b", "ecard"]},
        {"method": "card", "adapters": ["ecard"]},
        {"method": "face", "adapters": ["alipay"]},
    )
    assert validate_rules(rs, facts()) == []


def test_unknown_unconfigured_and_wrong_method_adapters_are_reasons() -> None:
    rs = rules({"method": "card", "adapters": ["nope", "spare", "alipay"]})
    reasons = validate_rules(rs, facts(face=False))
    codes = [r.code for r in reasons]
    assert codes == ["unknown_adapter", "adapter_not_configured", "method_unsupported", "no_adapter"]
    assert all(r.rule == 0 for r in reasons)
    assert strictest_code(reasons) == "routing_invalid"


def test_card_switched_off_while_face_is_on_is_non_face_required() -> None:
    rs = rules({"method": "card", "adapters": []}, {"method": "face", "adapters": ["alipay"]})
    reasons = validate_rules(rs, facts(face=True))
    assert [r.code for r in reasons] == ["non_face_required"]
    assert strictest_code(reasons) == "non_face_required"
    # ... and for one store category only, too (COMPLIANCE rule 5: not for a school, device, ...)
    narrow = rules({"method": "card", "merchant_categories": ["shop"], "adapters": []})
    assert [r.code for r in validate_rules(narrow, facts(face=True))] == ["non_face_required"]
    # without face, a card rule without adapters leaves card payments with nothing
    assert [r.code for r in validate_rules(narrow, facts(face=False))] == ["no_adapter"]


def test_face_rule_without_a_usable_adapter_is_rejected_when_face_is_on() -> None:
    rs = rules({"method": "face", "adapters": []})
    assert [r.code for r in validate_rules(rs, facts(face=True))] == ["no_adapter"]


def test_card_rules_must_reach_the_funding_sources_they_take() -> None:
    school = facts(bins=("6228",))
    only_ecard = rules({"method": "card", "adapters": ["ecard"]})
    reasons = validate_rules(only_ecard, school)
    assert [r.code for r in reasons] == ["funding_unreachable"] and "bank_agreement" in reasons[0].message
    assert validate_rules(rules({"method": "card", "adapters": ["ecard", "bank"]}), school) == []
    # a BIN rule only takes co-branded cards: the bank alone is enough
    assert (
        validate_rules(rules({"method": "card", "card_bins": ["6228"], "adapters": ["bank"]}), school) == []
    )
    assert funding_kind_for_card("62284800", ["6228"]) == "bank_agreement"
    assert funding_kind_for_card("31000001", ["6228"]) == "ecard_account"


def test_condition_errors() -> None:
    rs = rules(
        {"method": "face", "card_bins": ["6228"], "adapters": ["alipay"]},
        {"method": "card", "amount_min": 10, "amount_max": 5, "adapters": ["ecard", "ecard"]},
    )
    assert [r.code for r in validate_rules(rs, facts())] == ["condition_invalid"] * 3


def test_document_shape_is_strict() -> None:
    with pytest.raises(ValidationError):
        RuleSet.model_validate({"rules": [{"method": "cheque", "adapters": []}]})
    with pytest.raises(ValidationError):
        RuleSet.model_validate({"rules": [{"method": "card", "adapters": [], "colour": "red"}]})
    with pytest.raises(ValidationError):
        TimeWindow(start="25:00", end="10:00")
    with pytest.raises(ValidationError):
        rules(
            {"name": "a", "method": "card", "adapters": []}, {"name": "a", "method": "card", "adapters": []}
        )
