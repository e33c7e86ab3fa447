"""A turn that is a complete mobile number ends without the end-of-turn model's long wait
(conversation/number_turn.py): the phone parser decides, transcript by transcript."""

from __future__ import annotations

import pytest

from gocare_voice.conversation.number_turn import COMPLETE, NO_NUMBER, PARTIAL, NumberTurn


@pytest.mark.parametrize("said", ["98765 43210", "nine eight seven six five four three two one zero",
                                  "+91 98765 43210", "my number is 98765 43210", "0091 98765 43210"])
def test_a_complete_number_in_one_transcript(said: str) -> None:
    assert NumberTurn(region="IN").heard(said)


@pytest.mark.parametrize("said", ["98765", "+91 98765", "nine eight seven", "98765 4321", "98765 43210 12"])
def test_digits_that_are_not_a_number_yet_are_partial(said: str) -> None:
    turn = NumberTurn(region="IN")
    assert not turn.heard(said)
    assert turn.state == PARTIAL


@pytest.mark.parametrize("said", ["hello", "I don't remember it", "", "one moment", "oh, I don't know it", "98"])
def test_words_without_digits_are_no_number(said: str) -> None:
    turn = NumberTurn(region="IN")
    assert not turn.heard(said)
    assert turn.state == NO_NUMBER


def test_a_number_said_in_groups_is_complete_only_after_the_last_group() -> None:
    turn = NumberTurn(region="IN")
    assert not turn.heard("98765") and turn.state == PARTIAL
    assert turn.heard("43210")
    assert turn.complete and turn.state == COMPLETE


def test_a_committed_turn_starts_the_next_one_empty() -> None:
    turn = NumberTurn(region="IN")
    assert turn.heard("98765 43210")
    turn.committed()
    assert turn.state == NO_NUMBER
    assert not turn.heard("98765")


def test_more_words_after_the_number_keep_it_a_number_too_many_digits_do_not() -> None:
    turn = NumberTurn(region="IN")
    assert turn.heard("98765 43210")
    assert not turn.heard("12")  # 12 digits: no longer a valid number, the caller is still saying digits
    assert turn.state == PARTIAL


def test_the_region_decides() -> None:
    assert NumberTurn(region="US").heard("415 555 2671")
    assert not NumberTurn(region="US").heard("98765 43210")
