// A user-code operator in JavaScript (TypeScript compiles to the same thing).
// The wrapper runs it as:  jobs[].operator: user, language: javascript, entry_point: seeds/operators/transfer_counter.js#handler
// `task` is the payload minus credentials; `ctx.emit` sends an event, `ctx.log` a log line.
exports.handler = async (task, ctx) => {
  const event = task.input?.event;
  ctx.log(`counting transfers in blocks ${event?.start}..${event?.end}`);
  ctx.emit({ output: 0, kind: 'data', start: event.start, end: event.end, payload: { source_event: event.id } });
};
