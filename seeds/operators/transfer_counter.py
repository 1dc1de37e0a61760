# A user-code operator in Python.
#   jobs[].operator: user, language: python, entry_point: seeds/operators/transfer_counter.py#handler
def handler(task, ctx):
    event = task["input"]["event"]
    ctx.log(f"counting transfers in blocks {event['start']}..{event['end']}")
    ctx.emit({"output": 0, "kind": "data", "start": event["start"], "end": event["end"], "payload": {"source_event": event["id"]}})
