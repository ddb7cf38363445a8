from worker.stops import StopMatcher


def test_stop_split_across_tokens_is_cut_and_nothing_after_is_sent() -> None:
    m = StopMatcher(["</answer>"])
    sent = []
    for piece in ["The ", "result</", "ans", "wer> trailing"]:
        text, stopped = m.feed(piece)
        sent.append(text)
        if stopped:
            break
    assert "".join(sent) == "The result" and stopped


def test_held_back_prefix_is_released_when_it_does_not_complete() -> None:
    m = StopMatcher(["STOP"])
    assert m.feed("go ST") == ("go ", False)
    assert m.feed("AY") == ("STAY", False)
    assert m.feed("ends S") == ("ends ", False)
    assert m.flush() == "S"


def test_earliest_of_several_stops_wins() -> None:
    assert StopMatcher(["b", "a"]).feed("xxaxb") == ("xx", True)
