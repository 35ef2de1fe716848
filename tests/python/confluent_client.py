"""A real Confluent client against a running govex node.

Consumes the first record of --topic with confluent-kafka's AvroDeserializer (schemas
fetched from govex's registry by id) and prints it as one JSON line, then publishes one
deed-tax payment with AvroSerializer (schema registered with govex's registry, as a data
steward: HTTP Basic with the steward's token as password) under the key given by --key.
Before that it checks the registry's access rules and `test_compatibility`, which sends
`?normalize=False&verbose=True` (Python's spelling of booleans). Exits non-zero on any failure.
"""

import argparse
import datetime
import decimal
import json
import sys

from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from support import messages, shown_with


def main():
    parser = argparse.ArgumentParser()
    for option in ("bootstrap", "registry", "topic", "schema-file", "key", "steward-token", "department-token"):
        parser.add_argument(f"--{option}", required=True)
    args = parser.parse_args()

    registry = SchemaRegistryClient({"url": args.registry, "basic.auth.user.info": f"steward:{args.steward_token}"})
    context = SerializationContext(args.topic, MessageField.VALUE)

    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": "python-confluent-client",
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
    })
    consumer.subscribe([args.topic])
    deserializer = AvroDeserializer(registry)
    message = next(messages(consumer, 60), None)
    consumer.close()
    if message is None:
        print("no record arrived from govex", file=sys.stderr)
        return 1
    record = deserializer(message.value(), context)
    headers = {k: v.decode() for k, v in (message.headers() or [])}
    print("GOT " + json.dumps({"key": message.key().decode(), "value": record, "headers": headers}, default=shown_with(lambda instant: int(instant.timestamp() * 1000)), ensure_ascii=False), flush=True)

    with open(args.schema_file, encoding="utf-8") as f:
        schema_text = f.read()
    subject = f"{args.topic}-value"
    # Confluent's own call, verbose and not: the registry must take `True`/`False`.
    for verbose in (False, True):
        compatible = registry.test_compatibility(subject, Schema(schema_text, "AVRO"), verbose=verbose)
        print(f"COMPATIBLE verbose={verbose} {compatible}", flush=True)
        if compatible is not True:
            return 1
    # Writes need a steward: no credentials, and a department's token, are refused.
    for name, conf in [
        ("anonymous", {"url": args.registry}),
        ("department", {"url": args.registry, "basic.auth.user.info": f"tax:{args.department_token}"}),
    ]:
        try:
            SchemaRegistryClient(conf).set_compatibility(subject_name=subject, level="NONE")
        except SchemaRegistryError as e:
            print(f"REFUSED {name} {e.http_status_code} {e.error_code}", flush=True)
        else:
            print(f"{name} changed the registry's configuration", file=sys.stderr)
            return 1
    serializer = AvroSerializer(registry, schema_text, conf={"auto.register.schemas": True})
    payment = {
        "voucher_number": "PY-0001",
        "taxpayer_identifier_type": "CREDIT_CODE",
        "taxpayer_identifier_number": "91110000600037341L",
        "taxpayer_name": "汉阴县示范置业有限公司",
        "property_unit_number": "610921001001GB00002F00020002",
        "taxable_base": decimal.Decimal("850000.00"),
        "tax_rate": decimal.Decimal("0.0300"),
        "tax_amount": decimal.Decimal("25500.00"),
        "paid_at": datetime.datetime(2026, 11, 20, 2, 0, 0, tzinfo=datetime.timezone.utc),
        "tax_authority": "11100000000013338W",
        "division": "610921",
    }
    producer = Producer({"bootstrap.servers": args.bootstrap, "enable.idempotence": True, "acks": "all"})
    errors = []
    producer.produce(args.topic, key=args.key.encode(), value=serializer(payment, context),
                     on_delivery=lambda err, msg: errors.append(err) if err else None)
    remaining = producer.flush(30)
    if remaining or errors:
        print(f"delivery failed: {errors or remaining}", file=sys.stderr)
        return 1
    print("SENT", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
