export * from './trace-error';
export { ErrorFilter, errorBody, type ErrorBody } from './error.filter';
export { toFieldViolations, traceValidationPipe, uuidParam } from './validation';
