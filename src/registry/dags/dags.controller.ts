import { Body, Controller, Get, HttpCode, Param, ParseIntPipe, Post, Put, Res } from '@nestjs/common';
import { ApiBearerAuth, ApiBody, ApiConsumes, ApiOperation, ApiTags } from '@nestjs/swagger';
import type { Response } from 'express';
import { ArrayMaxSize, IsArray, IsIn, IsUUID } from 'class-validator';
import { CurrentPrincipal, OrgAdminOnly } from '../../common/auth';
import { badRequest } from '../../common/errors';
import type { Principal } from '../../common/identity';
import { DagDeployService } from './dag-deploy.service';
import { DagsService } from './dags.service';

export class GrantDto {
  @IsIn(['deploy', 'trigger'])
  permission!: 'deploy' | 'trigger';

  @IsArray()
  @ArrayMaxSize(100)
  @IsUUID('all', { each: true, message: 'each user id must be a UUID' })
  user_ids!: string[];
}

const SPEC_BODY = {
  description: 'The DAG spec as YAML (Content-Type: application/yaml) or JSON; see docs/capabilities/dag_configuration.md',
  schema: { type: 'string' as const },
};

const dagVersion = new ParseIntPipe({ exceptionFactory: () => badRequest('validation_failed', 'version must be a positive integer', [{ field: 'n', reason: 'must be a positive integer' }]) });

@ApiTags('dags')
@ApiBearerAuth()
@Controller('v1/dags')
export class DagsController {
  constructor(
    private readonly deployer: DagDeployService,
    private readonly dags: DagsService,
  ) {}

  @Post()
  @ApiConsumes('application/yaml', 'application/json')
  @ApiBody(SPEC_BODY)
  @ApiOperation({ summary: 'Deploy a DAG spec: stores a new immutable version and returns it with its plan' })
  async deploy(@CurrentPrincipal() p: Principal, @Body() body: unknown, @Res({ passthrough: true }) res: Response) {
    const result = await this.deployer.deploy(p, body);
    res.status(result.created_version ? 201 : 200);
    return result;
  }

  @Post('validate')
  @HttpCode(200)
  @ApiConsumes('application/yaml', 'application/json')
  @ApiBody(SPEC_BODY)
  @ApiOperation({ summary: 'Validate a DAG spec and return the plan a deploy would carry out, storing nothing' })
  async validate(@CurrentPrincipal() p: Principal, @Body() body: unknown) {
    return { valid: true, plan: await this.deployer.validate(p, body) };
  }

  @Get()
  list(@CurrentPrincipal() p: Principal) {
    return this.dags.list(p.orgId);
  }

  @Get(':name')
  get(@CurrentPrincipal() p: Principal, @Param('name') name: string) {
    return this.dags.get(p.orgId, name);
  }

  @Get(':name/versions')
  versions(@CurrentPrincipal() p: Principal, @Param('name') name: string) {
    return this.dags.versions(p.orgId, name);
  }

  @Get(':name/versions/:n')
  version(@CurrentPrincipal() p: Principal, @Param('name') name: string, @Param('n', dagVersion) n: number) {
    if (n < 1) throw badRequest('validation_failed', 'version must be a positive integer', [{ field: 'n', reason: 'must be a positive integer' }]);
    return this.dags.version(p.orgId, name, n);
  }

  @Put(':name/grants')
  @OrgAdminOnly()
  @HttpCode(204)
  @ApiOperation({ summary: 'Let members deploy or trigger this DAG (which also lets them read its datasets)' })
  async grant(@CurrentPrincipal() p: Principal, @Param('name') name: string, @Body() body: GrantDto): Promise<void> {
    await this.deployer.grant(p.orgId, name, body.user_ids, body.permission);
  }
}
