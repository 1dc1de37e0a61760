import { ParseUUIDPipe, PipeTransform, ValidationError, ValidationPipe } from '@nestjs/common';
import { badRequest, FieldViolation } from './trace-error';

/** Flattens nested class-validator errors into `{field: "a.b[0].c", reason}` pairs. */
export function toFieldViolations(errors: ValidationError[], prefix = ''): FieldViolation[] {
  return errors.flatMap((e) => {
    const field = /^\d+$/.test(e.property) ? `${prefix}[${e.property}]` : prefix ? `${prefix}.${e.property}` : e.property;
    const own = Object.values(e.constraints ?? {}).map((reason) => ({ field, reason }));
    return [...own, ...toFieldViolations(e.children ?? [], field)];
  });
}

/** The global pipe: strips nothing silently — unknown fields are rejected, every violation is listed. */
export function traceValidationPipe(): ValidationPipe {
  return new ValidationPipe({
    whitelist: true,
    forbidNonWhitelisted: true,
    transform: true,
    stopAtFirstError: false,
    exceptionFactory: (errors) => {
      const violations = toFieldViolations(errors);
      return badRequest(
        'validation_failed',
        `request is invalid: ${violations.map((v) => `${v.field}: ${v.reason}`).join('; ')}`,
        violations,
      );
    },
  });
}

/** For `@Param('id', uuidParam('id'))`: a non-UUID is a 400 naming the parameter, in the usual shape. */
export function uuidParam(field: string): ParseUUIDPipe {
  return new ParseUUIDPipe({ exceptionFactory: () => badRequest('validation_failed', `${field} must be a UUID`, [{ field, reason: 'must be a UUID' }]) });
}

/**
 * For `@Param('name', patternParam('name', PATTERN, 'must be ...'))`: a value that could never
 * name anything is a 400 naming the parameter and the rule, not a 404 that leaves the caller guessing.
 */
export function patternParam(field: string, pattern: RegExp, reason: string): PipeTransform<string, string> {
  return {
    transform: (value: string) => {
      if (!pattern.test(value)) throw badRequest('validation_failed', `${field} ${reason}`, [{ field, reason }]);
      return value;
    },
  };
}
