from appliance.asr.whisper_window import MARGIN_FRAMES, WINDOWS, compression_ratio, repeats, window_for

SECOND = 16000


def test_the_shortest_window_that_holds_the_utterance_and_its_margin():
    assert window_for(2 * SECOND) == WINDOWS[0] == 1000
    assert window_for(8 * SECOND + 14000) == 1000  # 8.9 s and the 1 s margin fit 10 s
    assert window_for(9 * SECOND) == 1500
    assert window_for(14 * SECOND - 160 * (MARGIN_FRAMES + 1)) == 1500


def test_too_long_for_a_short_window_means_the_30_s_pass():
    assert window_for(14 * SECOND) is None
    assert window_for(25 * SECOND) is None


def test_a_looping_decode_compresses_well():
    said = "Lock the front door and turn on the alarm."
    assert compression_ratio(said) < 2.4
    assert compression_ratio(" ".join([said] * 6)) > 2.4
    assert compression_ratio("") == 0.0


def test_a_run_of_three_words_said_twice_is_a_loop():
    assert repeats("Good morning, how are you? Good morning, how are you")
    assert not repeats("Good morning, how are you?")
    assert not repeats("Set a timer for ten minutes, then set another for five.")  # "set" twice only
