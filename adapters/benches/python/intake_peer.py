"""The Python peer of govex's intake benchmark: the same work in one process with the usual
Python stack (jsonschema, fastavro, confluent-kafka).

For each NDJSON line: parse, validate against the same JSON Schema (draft 2020-12), run the
same domain checks (check characters of citizen ids and credit codes, division shape, amounts,
times not in the future, deed tax = base x rate), map to the Avro record, encode with fastavro
in the Confluent wire format, produce with an idempotent acks=all producer, and wait for every
delivery report. Prints `records_per_second <n>` and the counts.
"""

import argparse
import datetime
import decimal
import io
import json
import struct
import sys
import time

import fastavro
import jsonschema
from confluent_kafka import Producer

CITIZEN_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
CREDIT_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
CREDIT_WEIGHTS = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28]


def citizen_ok(value):
    if len(value) != 18 or not value[:17].isdigit():
        return False
    try:
        birth = datetime.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    if birth > datetime.date.today():
        return False
    check = (12 - sum(int(c) * w for c, w in zip(value[:17], CITIZEN_WEIGHTS)) % 11) % 11
    return value[17] == ("X" if check == 10 else str(check))


def credit_ok(value):
    if len(value) != 18 or any(c not in CREDIT_ALPHABET for c in value):
        return False
    total = sum(CREDIT_ALPHABET.index(c) * w for c, w in zip(value[:17], CREDIT_WEIGHTS))
    return CREDIT_ALPHABET[(31 - total % 31) % 31] == value[17]


def party_ok(party):
    kind = party["identifier_type"]
    if kind == "CITIZEN_ID":
        return citizen_ok(party["identifier_number"])
    if kind == "CREDIT_CODE":
        return credit_ok(party["identifier_number"])
    return True


def instant(text):
    value = datetime.datetime.fromisoformat(text)
    if value > datetime.datetime.now(datetime.timezone.utc):
        raise ValueError("in the future")
    return value


def money(text, places=2):
    value = decimal.Decimal(text)
    if value < 0 or -value.as_tuple().exponent > places:
        raise ValueError("bad amount")
    return value.quantize(decimal.Decimal(1).scaleb(-places))


def map_tax(r):
    if not party_ok(r["taxpayer"]) or not credit_ok(r["tax_authority"]) or not r["division"].isdigit():
        return None
    base, rate, amount = money(r["taxable_base"]), money(r["tax_rate"], 4), money(r["tax_amount"])
    if (base * rate).quantize(decimal.Decimal("0.01"), rounding=decimal.ROUND_HALF_UP) != amount:
        return None
    return {
        "voucher_number": r["voucher_number"], "taxpayer_identifier_type": r["taxpayer"]["identifier_type"],
        "taxpayer_identifier_number": r["taxpayer"]["identifier_number"], "taxpayer_name": r["taxpayer"]["name"],
        "property_unit_number": r["property_unit_number"], "taxable_base": base, "tax_rate": rate, "tax_amount": amount,
        "paid_at": instant(r["paid_at"]), "tax_authority": r["tax_authority"], "division": r["division"],
    }, r["property_unit_number"]


def map_housing(r):
    if not all(party_ok(b) for b in r["buyers"]) or not credit_ok(r["seller_credit_code"]):
        return None
    record = dict(r)
    record["buyers"] = [dict(b) for b in r["buyers"]]
    record["total_price"] = money(r["total_price"])
    record["area_m2"] = money(r["area_m2"])
    record["filed_at"] = instant(r["filed_at"])
    return record, r["property_unit_number"]


def map_land(r):
    if not all(party_ok(h) for h in r["right_holders"]) or not credit_ok(r["registering_authority"]):
        return None
    record = dict(r)
    record["right_holders"] = [dict(h, share_percent=money(h["share_percent"]) if "share_percent" in h else None) for h in r["right_holders"]]
    record["area_m2"] = money(r["area_m2"])
    record["registered_at"] = instant(r["registered_at"])
    record.setdefault("certificate_number", None)
    return record, r["property_unit_number"]


def map_fund(r):
    if not citizen_ok(r["holder_citizen_id"]):
        return None
    if r.get("employer_credit_code") and not credit_ok(r["employer_credit_code"]):
        return None
    record = dict(r)
    record["amount"] = money(r["amount"])
    record["occurred_at"] = instant(r["occurred_at"])
    record.setdefault("employer_credit_code", None)
    record.setdefault("licence_id", None)
    return record, r["account_number"]


MAPPERS = {"tax": map_tax, "housing": map_housing, "land-registry": map_land, "provident-fund": map_fund}


def main():
    parser = argparse.ArgumentParser()
    for option in ("bootstrap", "topic", "department", "json-schema", "avro-schema", "input"):
        parser.add_argument(f"--{option}", required=True)
    parser.add_argument("--schema-id", type=int, required=True)
    args = parser.parse_args()

    with open(args.json_schema, encoding="utf-8") as f:
        validator = jsonschema.Draft202012Validator(json.load(f))
    with open(args.avro_schema, encoding="utf-8") as f:
        avro_schema = fastavro.parse_schema(json.load(f))
    with open(args.input, encoding="utf-8") as f:
        lines = f.read().splitlines()
    header = struct.pack(">bI", 0, args.schema_id)
    mapper = MAPPERS[args.department]
    producer = Producer({"bootstrap.servers": args.bootstrap, "enable.idempotence": True, "acks": "all",
                         "linger.ms": 5, "compression.type": "lz4", "queue.buffering.max.messages": 1000000})
    failures = []

    def on_delivery(err, _msg):
        if err is not None:
            failures.append(err)

    accepted = rejected = 0
    started = time.perf_counter()
    for line in lines:
        record = json.loads(line)
        if not validator.is_valid(record):
            rejected += 1
            continue
        mapped = mapper(record)
        if mapped is None:
            rejected += 1
            continue
        value, key = mapped
        out = io.BytesIO()
        out.write(header)
        fastavro.schemaless_writer(out, avro_schema, value)
        while True:
            try:
                producer.produce(args.topic, key=key.encode(), value=out.getvalue(), on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
        accepted += 1
    producer.flush(120)
    elapsed = time.perf_counter() - started
    if failures:
        print(f"delivery failures: {failures[:3]}", file=sys.stderr)
        return 1
    print(f"accepted {accepted} rejected {rejected} seconds {elapsed:.3f}")
    print(f"records_per_second {accepted / elapsed:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
