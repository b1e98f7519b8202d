"""An edge parses each result of a batch answer as a transaction answer or a problem, tried in that
order (shared/contract/answers.py `BatchResult`): the same choice and the same JSON schema as
pydantic's default union mode, without validating every body against both models."""

from __future__ import annotations

import orjson
import pytest
from pydantic import ValidationError

from shared.contract.answers import BatchAnswer, BatchResult, Problem, TransactionAnswer
from shared.contract.openapi import example_of

TX = example_of(TransactionAnswer)  # the documented answer
PROBLEM = {
    "type": "about:blank",
    "title": "Conflict",
    "status": 409,
    "detail": "insufficient funds",
    "code": "insufficient_funds",
    "request_id": "rid-1",
    "replayed": True,  # a stored rejection answered again: `replayed` alone does not make it a transaction
}


def test_each_result_is_parsed_as_what_it_is_and_dumps_back_unchanged():
    raw = orjson.dumps({"results": [{"status": 201, "body": TX}, {"status": 409, "body": PROBLEM}]})
    first, second = BatchAnswer.model_validate_json(raw).results
    assert isinstance(first.body, TransactionAnswer) and first.body.transaction.sequence == 5
    assert isinstance(second.body, Problem) and second.body.code == "insufficient_funds"
    assert first.body.dump() == TX and second.body.dump() == PROBLEM


def test_a_body_that_is_neither_is_refused():
    for body in ({"transaction": TX["transaction"]}, {k: v for k, v in PROBLEM.items() if k != "code"}, {}, []):
        with pytest.raises(ValidationError):
            BatchResult.model_validate({"status": 201, "body": body})


def test_the_schema_is_that_of_a_plain_union():
    body = BatchResult.model_json_schema()["properties"]["body"]
    assert body == {
        "anyOf": [{"$ref": "#/$defs/TransactionAnswer"}, {"$ref": "#/$defs/Problem"}],
        "title": "Body",
    }
