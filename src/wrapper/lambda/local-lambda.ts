import { handler } from './lambda-handler';

/** The local stand-in for a Lambda invocation: the payload arrives on stdin, the handler runs, the process exits. */
async function main(): Promise<void> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  await handler(JSON.parse(Buffer.concat(chunks).toString('utf8')));
}

main().then(
  () => process.exit(0),
  (err: Error) => {
    process.stderr.write(`local lambda failed: ${err.message}\n`);
    process.exit(1);
  },
);
