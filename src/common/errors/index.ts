export * from './trace-error';
export { ErrorFilter, errorBody, type ErrorBody } from './error.filter';
export { isDatabaseUnavailable } from './database-unavailable';
export { patternParam, toFieldViolations, traceValidationPipe, uuidParam } from './validation';
