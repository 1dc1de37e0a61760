import { ApiProperty, ApiPropertyOptional } from '@nestjs/swagger';
import { ArrayMaxSize, IsArray, IsEmail, IsInt, IsOptional, IsString, Matches, Max, MaxLength, Min, MinLength } from 'class-validator';
import { ROLE_NAME_PATTERN } from '../../common/identity';

const ROLE_MESSAGE = 'each role must be lower snake_case: a letter, then letters, digits or "_" (at most 64)';

export class CreateOrgDto {
  @ApiProperty({ example: 'acme', description: 'lower-case, starts with a letter; letters, digits, "_" and "-"' })
  @Matches(/^[a-z][a-z0-9_-]{0,62}$/, { message: 'name must be lower-case, start with a letter and use letters, digits, "_" or "-" (at most 63)' })
  name!: string;

  @ApiProperty({ example: 'admin@acme.example', description: 'the first admin of the new org (created if new)' })
  @IsEmail({}, { message: 'admin_email must be an email address' })
  admin_email!: string;
}

export class CreateUserDto {
  @ApiProperty({ example: 'ana@acme.example' })
  @IsEmail({}, { message: 'email must be an email address' })
  email!: string;

  @ApiPropertyOptional({ example: 'Ana' })
  @IsOptional()
  @IsString()
  @MinLength(1)
  @MaxLength(200)
  display_name?: string;

  @ApiProperty({ example: ['analyst'], description: 'org roles; "admin" administers the org' })
  @IsArray()
  @ArrayMaxSize(32)
  @Matches(ROLE_NAME_PATTERN, { each: true, message: ROLE_MESSAGE })
  roles!: string[];
}

export class SetRolesDto {
  @ApiProperty({ example: ['admin', 'analyst'] })
  @IsArray()
  @ArrayMaxSize(32)
  @Matches(ROLE_NAME_PATTERN, { each: true, message: ROLE_MESSAGE })
  roles!: string[];
}

export class CreateTokenDto {
  @ApiProperty({ example: 'ci deploys' })
  @IsString()
  @MinLength(1)
  @MaxLength(200)
  name!: string;

  @ApiPropertyOptional({ example: 90, description: 'days until the token expires; omit for no expiry' })
  @IsOptional()
  @IsInt()
  @Min(1)
  @Max(3650)
  expires_in_days?: number;
}
