"""What the test scripts share: how they show Avro values in JSON, and how they poll."""

import datetime
import decimal
import sys
import time


def shown_with(instant):
    """A `json.dumps` default: decimals as their text, datetimes and dates with `instant`,
    and any other type refused, so that a value of an unexpected type fails the test instead
    of passing as a string."""

    def shown(value):
        if isinstance(value, decimal.Decimal):
            return str(value)
        if isinstance(value, (datetime.datetime, datetime.date)):
            return instant(value)
        raise TypeError(f"cannot show {type(value)}")

    return shown


def messages(consumer, seconds):
    """The messages `consumer` gets within `seconds`; consumer errors are reported on stderr
    and skipped."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            print(f"consumer error: {message.error()}", file=sys.stderr)
            continue
        yield message
