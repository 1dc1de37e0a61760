import { Body, Controller, Delete, Get, HttpCode, Param, Post, Put } from '@nestjs/common';
import { ApiBearerAuth, ApiOperation, ApiTags } from '@nestjs/swagger';
import { CurrentPrincipal, OrgAdminOnly, PlatformAdminOnly } from '../../common/auth';
import { forbidden, uuidParam } from '../../common/errors';
import { isOrgAdmin, type Principal } from '../../common/identity';
import { CreateOrgDto, CreateTokenDto, CreateUserDto, SetRolesDto } from './identity.dto';
import { IdentityService } from './identity.service';

@ApiTags('identity')
@ApiBearerAuth()
@Controller('v1')
export class IdentityController {
  constructor(private readonly identity: IdentityService) {}

  @Get('me')
  @ApiOperation({ summary: 'Who the token acts as: user, org and roles' })
  me(@CurrentPrincipal() p: Principal) {
    return { user_id: p.userId, email: p.email, org: p.orgName, org_id: p.orgId, roles: p.roles, platform_admin: p.platformAdmin };
  }

  @Post('orgs')
  @PlatformAdminOnly()
  @ApiOperation({ summary: 'Create an org with its first admin; returns that admin\'s token once' })
  createOrg(@Body() body: CreateOrgDto) {
    return this.identity.createOrg(body.name, body.admin_email);
  }

  @Get('orgs/:org')
  @ApiOperation({ summary: 'The org this token acts for' })
  getOrg(@CurrentPrincipal() p: Principal) {
    return this.identity.getOrg(p.orgId);
  }

  @Get('orgs/:org/users')
  @OrgAdminOnly()
  listUsers(@CurrentPrincipal() p: Principal) {
    return this.identity.listMembers(p.orgId);
  }

  @Post('orgs/:org/users')
  @OrgAdminOnly()
  @ApiOperation({ summary: 'Add a user to the org with roles (the user is created if new)' })
  addUser(@CurrentPrincipal() p: Principal, @Body() body: CreateUserDto) {
    return this.identity.addMember(p.orgId, body.email, body.display_name ?? null, body.roles);
  }

  @Put('orgs/:org/users/:userId/roles')
  @OrgAdminOnly()
  setRoles(@CurrentPrincipal() p: Principal, @Param('userId', uuidParam('userId')) userId: string, @Body() body: SetRolesDto) {
    return this.identity.setRoles(p.orgId, userId, body.roles);
  }

  @Delete('orgs/:org/users/:userId')
  @OrgAdminOnly()
  @HttpCode(204)
  async removeUser(@CurrentPrincipal() p: Principal, @Param('userId', uuidParam('userId')) userId: string): Promise<void> {
    await this.identity.removeMember(p.orgId, userId);
  }

  @Post('orgs/:org/users/:userId/tokens')
  @ApiOperation({ summary: 'Issue a token (admins for anyone, members for themselves); the secret is shown once' })
  issueToken(@CurrentPrincipal() p: Principal, @Param('userId', uuidParam('userId')) userId: string, @Body() body: CreateTokenDto) {
    assertSelfOrAdmin(p, userId);
    return this.identity.issueToken(p.orgId, userId, body.name, body.expires_in_days);
  }

  @Get('orgs/:org/users/:userId/tokens')
  listTokens(@CurrentPrincipal() p: Principal, @Param('userId', uuidParam('userId')) userId: string) {
    assertSelfOrAdmin(p, userId);
    return this.identity.listTokens(p.orgId, userId);
  }

  @Delete('orgs/:org/tokens/:tokenId')
  @ApiOperation({ summary: 'Revoke a token (admins any in the org, members their own)' })
  revokeToken(@CurrentPrincipal() p: Principal, @Param('tokenId', uuidParam('tokenId')) tokenId: string) {
    return this.identity.revokeToken(p.orgId, tokenId, p);
  }
}

function assertSelfOrAdmin(p: Principal, userId: string): void {
  if (p.userId !== userId && !isOrgAdmin(p)) {
    throw forbidden('org_admin_required', 'only org admins may manage other members\' tokens');
  }
}
