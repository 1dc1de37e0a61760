import { Body, Controller, Get, HttpCode, Param, ParseUUIDPipe, Post, Put } from '@nestjs/common';
import { ApiBearerAuth, ApiOperation, ApiProperty, ApiTags } from '@nestjs/swagger';
import { ArrayMaxSize, IsArray, Matches } from 'class-validator';
import { CurrentPrincipal, OrgAdminOnly } from '../../common/auth';
import { badRequest, patternParam } from '../../common/errors';
import { ROLE_NAME_PATTERN, type Principal } from '../../common/identity';
import { DATASET_NAME_PATTERN } from '../dags/dag-spec';
import { datasetView, DatasetsService } from './datasets.service';

export class ReadRolesDto {
  @ApiProperty({ example: ['analyst'], description: 'org roles that may read the dataset, besides its DAG\'s deployers and org admins' })
  @IsArray()
  @ArrayMaxSize(64)
  @Matches(ROLE_NAME_PATTERN, { each: true, message: 'each role must be lower snake_case (at most 64)' })
  read_roles!: string[];
}

/** A name no dataset can have (`MyData`) is told so, not answered like an unknown one. */
const datasetName = patternParam('name', DATASET_NAME_PATTERN, 'must be a dataset name: lower snake_case, ^[a-z][a-z0-9_]{0,127}$');

@ApiTags('datasets')
@ApiBearerAuth()
@Controller('v1/datasets')
export class DatasetsController {
  constructor(private readonly datasets: DatasetsService) {}

  @Get()
  @ApiOperation({ summary: 'Published datasets the caller may read' })
  async list(@CurrentPrincipal() p: Principal) {
    return (await this.datasets.listReadable(p)).map((d) => datasetView(d));
  }

  @Get(':name')
  @ApiOperation({ summary: 'One published dataset: uuid, producer, backend, versions, read_roles (400 for a name that is not lower snake_case; 404 if unknown or unreadable)' })
  async get(@CurrentPrincipal() p: Principal, @Param('name', datasetName) name: string) {
    const row = await this.datasets.getReadable(p, name);
    return datasetView(row, await this.datasets.versions(row.dataset_uuid));
  }

  @Post(':name/versions/:version/purge')
  @HttpCode(200)
  @OrgAdminOnly()
  @ApiOperation({ summary: 'Delete a version\'s data (org admins only; never the current version). The only way Trace deletes data.' })
  async purge(@CurrentPrincipal() p: Principal, @Param('name', datasetName) name: string, @Param('version', new ParseUUIDPipe({ exceptionFactory: () => badRequest('validation_failed', 'version must be a dataset_version UUID') })) version: string) {
    return this.datasets.purge(p.orgId, name, version);
  }

  @Put(':name/read-roles')
  @OrgAdminOnly()
  @ApiOperation({ summary: 'Set which org roles may read the dataset (org admins only)' })
  async setReadRoles(@CurrentPrincipal() p: Principal, @Param('name', datasetName) name: string, @Body() body: ReadRolesDto) {
    return datasetView(await this.datasets.setReadRoles(p.orgId, name, body.read_roles));
  }
}
