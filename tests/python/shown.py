"""How the test scripts show Avro values in JSON: decimals as their text, instants as the
caller wants them, and any other type refused, so that a value of an unexpected type fails
the test instead of passing as a string."""

import datetime
import decimal


def shown_with(instant):
    """A `json.dumps` default that shows datetimes and dates with `instant`."""

    def shown(value):
        if isinstance(value, decimal.Decimal):
            return str(value)
        if isinstance(value, (datetime.datetime, datetime.date)):
            return instant(value)
        raise TypeError(f"cannot show {type(value)}")

    return shown
