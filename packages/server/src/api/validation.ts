/**
 * Request validation by the route schemas (`api/schemas.ts`), and what a refusal answers.
 *
 * Requests are validated by Ajv in the JSON Schema dialect of OpenAPI 3.1 (2020-12), with nothing
 * coerced, defaulted or removed: a handler sees the request as it came. A refusal becomes the
 * catalogue error the route's own parser gives for the refused field (its `check`), so the code
 * and message are the same as without the schema; a refusal no check explains is
 * `invalid_parameter` naming the field.
 *
 * Response schemas only describe: answers are serialized as they always were (`JSON.stringify`).
 */
import { Ajv2020 } from 'ajv/dist/2020.js';
import type { FastifyInstance, FastifyRequest, FastifySchemaValidationError } from 'fastify';
import { RillError } from '../model/errors.js';
import type { RouteChecks } from './schemas.js';

/**
 * Request bodies described but not validated by their schema, as `METHOD url`: the route parses
 * them itself, once (the publish path: `parseEventInput` checks every event on every transport).
 */
export const SELF_PARSED_BODIES: ReadonlySet<string> = new Set(['POST /v1/topics/:topic/events']);

/** Annotation keywords of the API description that Ajv may meet in a route schema. */
const ANNOTATIONS = ['example', 'style', 'explode'];

/** The validator of route schemas: Ajv for JSON Schema 2020-12, changing nothing it checks. */
export function requestAjv(): Ajv2020 {
  return new Ajv2020({
    allErrors: false,
    coerceTypes: false,
    useDefaults: false,
    removeAdditional: false,
    allowUnionTypes: true,
    keywords: ANNOTATIONS,
  });
}

/** Sets the app's validator and serializer compilers (before any route is added). */
export function useRouteSchemas(app: FastifyInstance): void {
  const ajv = requestAjv();
  const pass = (): boolean => true;
  app.setValidatorCompiler(({ schema, method, url, httpPart }) => {
    if (httpPart === 'body' && SELF_PARSED_BODIES.has(`${method} ${url}`)) return pass;
    // Headers are described only: each is text, read (and checked) by the route that takes it.
    if (httpPart === 'headers') return pass;
    return ajv.compile(schema);
  });
  app.setSerializerCompiler(() => (data) => JSON.stringify(data));
}

interface ValidationFailure {
  validation?: FastifySchemaValidationError[];
  validationContext?: string;
}

/**
 * The catalogue error for a request its route's schema refused, or undefined when `err` is not
 * such a refusal: the check of the first refused field, run on its value.
 */
export function validationError(err: unknown, req: FastifyRequest): RillError | undefined {
  const { validation, validationContext: part } = (err ?? {}) as ValidationFailure;
  if (!Array.isArray(validation) || part === undefined) return undefined;
  const first = validation[0];
  const checks: RouteChecks = req.routeOptions.config.checks ?? {};
  const params = (first?.params ?? {}) as Record<string, unknown>;
  const name =
    first?.instancePath.split('/')[1] ??
    (params.missingProperty as string | undefined) ??
    (params.additionalProperty as string | undefined);
  try {
    if (part === 'body') checks.body?.(req.body);
    else if (name !== undefined && (part === 'querystring' || part === 'params')) {
      const values = (part === 'params' ? req.params : req.query) as Record<string, unknown>;
      checks[part]?.[name]?.(values[name]);
    }
  } catch (e) {
    if (e instanceof RillError) return e;
    throw e;
  }
  const where = part === 'querystring' ? 'Query parameter' : part === 'params' ? 'Path' : part;
  const field = name === undefined ? '' : ` ${JSON.stringify(name.slice(0, 64))}`;
  return new RillError('invalid_parameter', `${where}${field} ${first?.message ?? 'is invalid'}`);
}
