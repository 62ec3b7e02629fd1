"""Issue 20's verified floor of a large download: the larger of curl's time and the time to
hash the bytes with the announced sum (both measured in the same run); goal <= 1.1x."""

GOAL = 1.1


def floor_line(where, ours_s, curl_s, hash_s):
    """One line: ours beside max(curl, hash) for a large file written to `where`."""
    floor = max(curl_s, hash_s)
    r = ours_s / floor if floor else float("inf")
    return ("goal    %s: ours %.2f s vs verified floor max(curl %.2f s, hash %.2f s) = %.2f s:"
            " %.2fx (goal <= %.1fx) -> %s" % (where, ours_s, curl_s, hash_s, floor, r, GOAL,
                                              "ok" if r <= GOAL else "ABOVE"))


if __name__ == "__main__":
    print("bench/floorline.py: a helper of bench/subscribe.py; nothing to measure here")
