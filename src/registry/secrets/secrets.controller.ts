import { Body, Controller, Delete, Get, HttpCode, Param, Put, Res } from '@nestjs/common';
import { ApiBearerAuth, ApiOperation, ApiProperty, ApiTags } from '@nestjs/swagger';
import type { Response } from 'express';
import { IsString, MaxLength, MinLength } from 'class-validator';
import { CurrentPrincipal, OrgAdminOnly } from '../../common/auth';
import { badRequest, notFound } from '../../common/errors';
import type { Principal } from '../../common/identity';
import { SECRET_NAME_PATTERN } from '../dags/dag-spec';
import { SecretsService } from './secrets.service';

export class PutSecretDto {
  @ApiProperty({ description: 'the secret value; stored encrypted and never returned' })
  @IsString({ message: 'value must be a string' })
  @MinLength(1, { message: 'value must not be empty' })
  @MaxLength(65536, { message: 'value must be at most 65536 characters' })
  value!: string;
}

function secretName(name: string): string {
  if (!SECRET_NAME_PATTERN.test(name)) {
    throw badRequest('validation_failed', 'secret name must be lower snake_case (at most 128)', [{ field: 'name', reason: 'must match ^[a-z][a-z0-9_]{0,127}$' }]);
  }
  return name;
}

/** Write-only secrets, managed by org admins. No endpoint returns a value. */
@ApiTags('secrets')
@ApiBearerAuth()
@Controller('v1/secrets')
@OrgAdminOnly()
export class SecretsController {
  constructor(private readonly secrets: SecretsService) {}

  @Put(':name')
  @ApiOperation({ summary: 'Create or replace a secret (write-only)' })
  async put(@CurrentPrincipal() p: Principal, @Param('name') name: string, @Body() body: PutSecretDto, @Res({ passthrough: true }) res: Response) {
    const { secret, created } = await this.secrets.put(p.orgId, secretName(name), body.value, p.userId);
    res.status(created ? 201 : 200);
    return secret;
  }

  @Get()
  @ApiOperation({ summary: 'Secret names and timestamps (never values)' })
  list(@CurrentPrincipal() p: Principal) {
    return this.secrets.list(p.orgId);
  }

  @Delete(':name')
  @HttpCode(204)
  async delete(@CurrentPrincipal() p: Principal, @Param('name') name: string): Promise<void> {
    if (!(await this.secrets.delete(p.orgId, secretName(name)))) throw notFound('secret_not_found', `no secret named "${name}"`);
  }
}
