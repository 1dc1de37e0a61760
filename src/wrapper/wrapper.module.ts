import { Module } from '@nestjs/common';

/** The `wrapper` role: the worker that fetches tasks and runs operator code inside its sandbox. Loaded only when this process runs the role. */
@Module({})
export class WrapperModule {}
