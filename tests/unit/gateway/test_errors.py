import pytest

from gateway import errors

pytestmark = pytest.mark.unit


def test_every_code_is_snake_case_and_has_a_class_for_its_status() -> None:
    statuses = {
        cls.status
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.ProblemError) and cls is not errors.ProblemError
    }
    for code, (status, title) in errors.CODES.items():
        assert code == code.lower() and " " not in code and title
        assert status in statuses | {500}, code


def test_a_code_cannot_be_raised_with_the_wrong_status() -> None:
    with pytest.raises(ValueError):
        errors.Conflict("validation_error")
    with pytest.raises(ValueError):
        errors.Unprocessable("no_such_code")


def test_problem_body_shape() -> None:
    body = errors.problem_body("duplicate_order", "taken", request_id="req_1", payment_id="pay_1")
    assert body == {
        "type": "urn:campuspay:problem:duplicate_order",
        "title": errors.CODES["duplicate_order"][1],
        "status": 409,
        "detail": "taken",
        "code": "duplicate_order",
        "request_id": "req_1",
        "payment_id": "pay_1",
    }
