/**
 * Structured JSON logs (Powertools for AWS Lambda's Logger), the same outside Lambda as in it.
 */
import { Logger } from '@aws-lambda-powertools/logger';

export function createLogger(level = process.env.SKIFF_LOG_LEVEL ?? 'INFO'): Logger {
  return new Logger({ serviceName: 'skiff', logLevel: level as 'INFO' });
}
