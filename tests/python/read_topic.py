"""Reads a topic of a running govex node with Confluent's Python client.

Consumes --topic from the beginning with confluent-kafka's AvroDeserializer (each record's
writer schema fetched from govex's registry by the id in its header) until --count records
came or --seconds passed, and prints each as one line: `RECORD <schema id> <json>`. Exits
non-zero when fewer came.
"""

import argparse
import json
import struct
import sys
import uuid

from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext

from support import messages, shown_with


def main():
    parser = argparse.ArgumentParser()
    for option in ("bootstrap", "registry", "topic"):
        parser.add_argument(f"--{option}", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    registry = SchemaRegistryClient({"url": args.registry})
    deserializer = AvroDeserializer(registry)
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": f"read-topic-{uuid.uuid4()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([args.topic])
    got = 0
    for message in messages(consumer, args.seconds):
        schema_id = struct.unpack(">I", message.value()[1:5])[0]
        value = deserializer(message.value(), SerializationContext(args.topic, MessageField.VALUE))
        print(f"RECORD {schema_id} {json.dumps(value, default=shown_with(lambda instant: instant.isoformat()), ensure_ascii=False)}", flush=True)
        got += 1
        if got == args.count:
            break
    consumer.close()
    if got < args.count:
        print(f"only {got} of {args.count} records came", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
