import { Body, Controller, Get, HttpCode, HttpStatus, Param, ParseUUIDPipe, Post, Res, StreamableFile } from '@nestjs/common';
import type { Response } from 'express';
import { ApiBearerAuth, ApiOperation, ApiProperty, ApiPropertyOptional, ApiTags } from '@nestjs/swagger';
import { ArrayMaxSize, IsArray, IsIn, IsOptional, IsString, MaxLength, MinLength } from 'class-validator';
import { CurrentPrincipal } from '../common/auth';
import { badRequest } from '../common/errors';
import type { Principal } from '../common/identity';
import { QueryService } from './query.service';

export class QueryDto {
  @ApiProperty({ example: 'SELECT count(*) FROM eth_blocks' })
  @IsString({ message: 'sql must be a string' })
  @MinLength(1, { message: 'sql must not be empty' })
  @MaxLength(100_000, { message: 'sql must be at most 100000 characters' })
  sql!: string;

  @ApiPropertyOptional({ enum: ['interactive', 'batch'], default: 'interactive' })
  @IsOptional()
  @IsIn(['interactive', 'batch'], { message: 'mode must be interactive or batch' })
  mode?: 'interactive' | 'batch';

  @ApiPropertyOptional({ description: 'values for $1, $2, … in the SQL', example: [18000000] })
  @IsOptional()
  @IsArray({ message: 'params must be a list' })
  @ArrayMaxSize(100)
  params?: unknown[];
}

@ApiTags('query')
@ApiBearerAuth()
@Controller('v1/query')
export class QueryController {
  constructor(private readonly queries: QueryService) {}

  @Post()
  @HttpCode(200)
  @ApiOperation({ summary: 'Run SQL over the published datasets you may read; each is pinned to its current version for the whole query. Batch mode answers 202 with a query id.' })
  async run(@CurrentPrincipal() p: Principal, @Body() body: QueryDto, @Res({ passthrough: true }) res: Response) {
    if ((body.params ?? []).some((v) => v !== null && !['string', 'number', 'boolean'].includes(typeof v))) {
      throw badRequest('validation_failed', 'params: each value must be a string, number, boolean or null', [{ field: 'params', reason: 'each value must be a string, number, boolean or null' }]);
    }
    if (body.mode === 'batch') {
      res.status(HttpStatus.ACCEPTED);
      return this.queries.submit(p, body.sql, body.params ?? []);
    }
    // The answer is JSON text already (its rows were serialized by the worker that ran the query).
    const answer = await this.queries.interactive(p, body.sql, body.params ?? []);
    res.type('application/json');
    return answer;
  }

  @Get(':id')
  @ApiOperation({ summary: 'A batch query: status, pinned versions, row count, and where its result is (the submitter only)' })
  status(@CurrentPrincipal() p: Principal, @Param('id', new ParseUUIDPipe({ exceptionFactory: () => badRequest('validation_failed', 'id must be a query id (UUID)') })) id: string) {
    return this.queries.status(p, id);
  }

  @Get(':id/result')
  @ApiOperation({ summary: 'The full result of a finished batch query, as Parquet (the submitter only)' })
  async result(@CurrentPrincipal() p: Principal, @Param('id', new ParseUUIDPipe({ exceptionFactory: () => badRequest('validation_failed', 'id must be a query id (UUID)') })) id: string) {
    return new StreamableFile(await this.queries.result(p, id), { type: 'application/vnd.apache.parquet', disposition: `attachment; filename="query-${id}.parquet"` });
  }
}
