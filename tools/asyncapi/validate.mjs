// Checks docs/asyncapi.yaml the way the people who consume it will:
//
// 1. The official AsyncAPI parser (@asyncapi/parser, pinned in package.json)
//    parses and validates the document, resolving its `$ref`s to
//    docs/schemas/*.json relative to the document. Every diagnostic is printed
//    with its severity, rule and path. Any error fails the run; so does any
//    warning, info or hint that ALLOWED_DIAGNOSTICS below does not explain.
//    Every `$ref` must be internal or a relative path to an existing file.
// 2. Every message's `payload` is a `$ref` to a JSON Schema file that exists
//    (docs/schemas/, draft 2020-12), every schema file is some message's
//    payload, and every message has examples.
// 3. Every example validates: `payload` against the message's schema file
//    (Ajv, draft 2020-12, formats checked), `headers` against the message's
//    headers schema as the parser resolved it (an AsyncAPI Schema Object,
//    a superset of JSON Schema draft-07).
//
// Usage: node validate.mjs [path/to/asyncapi.yaml]   (default: docs/asyncapi.yaml)
// Run through scripts/check-asyncapi, which installs the pinned packages
// (npm ci) when they are missing. Needs no network: the document's `$ref`s
// must be local (checked below), and the parser bundles the AsyncAPI schemas.

import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

import { Parser, fromFile } from '@asyncapi/parser';
import Ajv07 from 'ajv';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import yaml from 'js-yaml';

// Diagnostics the parser reports that the document keeps on purpose, each
// with the reason. A diagnostic is allowed when both its rule (code) and its
// path (dot-separated) match. Errors can never be allowed.
const ALLOWED_DIAGNOSTICS = [
  {
    code: 'asyncapi-latest-version',
    path: 'asyncapi',
    reason:
      'an info-severity recommendation to move to AsyncAPI 3.1.0. The document ' +
      'is 3.0.0 on purpose: src/domain/contract.rs checks that it starts with ' +
      '`asyncapi: 3.0.0`, and changing the spec version is a contract change of ' +
      'its own (for consumers and their tooling), not a fix.',
  },
];

// Messages that have no payload schema, with the reason. Every other message
// must have one: a `$ref` to a file in docs/schemas/.
const NO_PAYLOAD_SCHEMA = {
  deadLetter:
    'a dead letter is the rejected request body unchanged: any bytes (not ' +
    'JSON, not UTF-8, too large...), so only its headers have a schema and ' +
    "its examples' payloads are not checked.",
};

const SEVERITY = ['error', 'warning', 'info', 'hint'];
const JSON_SCHEMA_2020_12 = 'https://json-schema.org/draft/2020-12/schema';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '..', '..');
const documentPath = path.resolve(process.argv[2] ?? path.join(repoRoot, 'docs', 'asyncapi.yaml'));
const documentDir = path.dirname(documentPath);
const parserVersion = createRequire(import.meta.url)('@asyncapi/parser/package.json').version;

const show = (file) => {
  const relative = path.relative(repoRoot, file);
  return relative.startsWith('..') ? file : relative;
};

let failures = 0;
const fail = (message) => {
  failures += 1;
  console.log(`FAIL ${message}`);
};

const isObject = (value) => value !== null && typeof value === 'object' && !Array.isArray(value);

// --- 1. The official parser ------------------------------------------------

console.log(`${show(documentPath)}: parsing with @asyncapi/parser ${parserVersion}`);
if (!fs.existsSync(documentPath)) {
  console.log(`FAIL ${show(documentPath)} does not exist`);
  process.exit(1);
}

// Before the parser resolves anything: every `$ref`, in the document and in
// the files it refers to, is internal (`#/...`) or a relative path to an
// existing file. So nothing is fetched from the network.
const scanned = new Set();
function checkRefs(file) {
  if (scanned.has(file)) return;
  scanned.add(file);
  let content;
  try {
    content = yaml.load(fs.readFileSync(file, 'utf8'), { schema: yaml.CORE_SCHEMA });
  } catch {
    return; // not YAML or JSON: the parser reports it
  }
  const from = path.dirname(file);
  (function walk(node, at) {
    if (Array.isArray(node)) {
      node.forEach((item, index) => walk(item, `${at}[${index}]`));
      return;
    }
    if (!isObject(node)) return;
    for (const [key, value] of Object.entries(node)) {
      if (key === '$ref' && typeof value === 'string' && !value.startsWith('#')) {
        const target = value.split('#')[0];
        const resolved = path.resolve(from, target);
        if (/^[a-z][a-z0-9+.-]*:/i.test(target) || path.isAbsolute(target)) {
          fail(`${show(file)}: ${at}.$ref '${value}': only internal references and relative file paths are allowed`);
        } else if (!fs.existsSync(resolved)) {
          fail(`${show(file)}: ${at}.$ref '${value}': ${show(resolved)} does not exist`);
        } else {
          checkRefs(resolved);
        }
      }
      walk(value, at ? `${at}.${key}` : key);
    }
  })(content, '');
}
checkRefs(documentPath);
if (failures > 0) {
  console.log(`FAIL a $ref is neither internal nor a relative path to an existing file; not parsed`);
  process.exit(1);
}

const { document, diagnostics } = await fromFile(new Parser(), documentPath).parse();

for (const diagnostic of diagnostics) {
  const severity = SEVERITY[diagnostic.severity] ?? `severity ${diagnostic.severity}`;
  const where = diagnostic.path.join('.') || '(root)';
  const start = diagnostic.range?.start;
  const source = diagnostic.source ?? documentPath;
  const location = start ? `${show(source)}:${start.line + 1}:${start.character + 1}` : show(source);
  const allowed =
    diagnostic.severity !== 0 &&
    ALLOWED_DIAGNOSTICS.find((each) => each.code === diagnostic.code && each.path === where);
  const line = `${severity} ${diagnostic.code} at ${where} (${location}): ${diagnostic.message}`;
  if (allowed) {
    console.log(`  ${line}\n    allowed: ${allowed.reason}`);
  } else if (diagnostic.severity === 0) {
    fail(line);
  } else {
    fail(`${line}\n    not explained: fix the document, or allow it with the reason in ALLOWED_DIAGNOSTICS (tools/asyncapi/validate.mjs)`);
  }
}

if (document === undefined) {
  console.log(`FAIL the parser did not accept ${show(documentPath)}; nothing more is checked`);
  process.exit(1);
}

// --- 2. References, payload schemas, examples -------------------------------

// The document as written (CORE_SCHEMA: YAML timestamps stay strings, as
// the parser reads them), for what the resolved model no longer shows: the
// payloads' `$ref`s.
const raw = yaml.load(fs.readFileSync(documentPath, 'utf8'), { schema: yaml.CORE_SCHEMA });

// Payloads: JSON Schema draft 2020-12, formats checked. schemars writes the
// Rust integer types as formats (`uint64`...): checked as their ranges.
const ajv2020 = new Ajv2020({ allErrors: true, strict: true, strictTypes: false, strictRequired: false });
addFormats(ajv2020);
const integerFormats = {
  int8: [-(2 ** 7), 2 ** 7 - 1],
  int16: [-(2 ** 15), 2 ** 15 - 1],
  int32: [-(2 ** 31), 2 ** 31 - 1],
  int64: [-(2n ** 63n), 2n ** 63n - 1n],
  int: [-(2n ** 63n), 2n ** 63n - 1n],
  uint8: [0, 2 ** 8 - 1],
  uint16: [0, 2 ** 16 - 1],
  uint32: [0, 2 ** 32 - 1],
  uint64: [0, 2n ** 64n - 1n],
  uint: [0, 2n ** 64n - 1n],
};
for (const [name, [min, max]] of Object.entries(integerFormats)) {
  ajv2020.addFormat(name, {
    type: 'number',
    validate: (n) => Number.isInteger(n) && BigInt(n) >= BigInt(min) && BigInt(n) <= BigInt(max),
  });
}

// Headers: AsyncAPI Schema Objects (the default schema format of AsyncAPI
// 3.0.0), a superset of JSON Schema draft-07. Its extra keywords are
// annotations here, and `x-` extensions (the parser adds `x-parser-schema-id`)
// are dropped before compiling.
const ajv07 = new Ajv07({ allErrors: true, strict: true, strictTypes: false, strictRequired: false });
addFormats(ajv07);
ajv07.addKeyword({ keyword: 'discriminator', schemaType: 'string' });
ajv07.addKeyword({ keyword: 'externalDocs', schemaType: 'object' });

const SCHEMA_MAPS = new Set(['properties', 'patternProperties', 'definitions', '$defs', 'dependentSchemas']);
const LITERALS = new Set(['const', 'enum', 'default', 'examples', 'required']);
function withoutExtensions(schema) {
  if (Array.isArray(schema)) return schema.map(withoutExtensions);
  if (!isObject(schema)) return schema;
  const out = {};
  for (const [key, value] of Object.entries(schema)) {
    if (key.startsWith('x-')) continue;
    if (SCHEMA_MAPS.has(key) && isObject(value)) {
      out[key] = Object.fromEntries(Object.entries(value).map(([name, sub]) => [name, withoutExtensions(sub)]));
    } else if (LITERALS.has(key)) {
      out[key] = value;
    } else {
      out[key] = withoutExtensions(value);
    }
  }
  return out;
}

const errorsOf = (validate) =>
  validate.errors
    .map((error) => `      ${error.instancePath || '(root)'} ${error.message}${error.params && Object.keys(error.params).length ? ` ${JSON.stringify(error.params)}` : ''}`)
    .join('\n');

// Every message as written: in components.messages and inline in channels
// (a `$ref` to a component is the component's message).
const messages = [];
for (const [id, message] of Object.entries(raw?.components?.messages ?? {})) {
  if (!isObject(message) || '$ref' in message) continue;
  messages.push({ at: `components.messages.${id}`, id, raw: message, parsed: document.components().messages().get(id) });
}
for (const [channelId, channel] of Object.entries(raw?.channels ?? {})) {
  for (const [id, message] of Object.entries(channel?.messages ?? {})) {
    if (!isObject(message) || '$ref' in message) continue;
    messages.push({ at: `channels.${channelId}.messages.${id}`, id, raw: message, parsed: document.channels().get(channelId)?.messages().get(id) });
  }
}

const schemaDir = path.join(documentDir, 'schemas');
const schemaFiles = fs.existsSync(schemaDir) ? fs.readdirSync(schemaDir).filter((name) => name.endsWith('.json')) : [];
const usedSchemaFiles = new Set();
const compiled = new Map();
function payloadValidator(file) {
  if (!compiled.has(file)) {
    let validate = null;
    try {
      const schema = JSON.parse(fs.readFileSync(file, 'utf8'));
      if (schema.$schema !== JSON_SCHEMA_2020_12) {
        fail(`${show(file)}: "$schema" is ${JSON.stringify(schema.$schema)}, not "${JSON_SCHEMA_2020_12}"`);
      } else {
        validate = ajv2020.compile(schema);
      }
    } catch (error) {
      fail(`${show(file)}: not a usable JSON Schema: ${error.message}`);
    }
    compiled.set(file, validate);
  }
  return compiled.get(file);
}

let examplesChecked = 0;
for (const message of messages) {
  const { at, id } = message;
  if (!message.parsed) {
    fail(`${at}: the parser's model has no such message`);
    continue;
  }

  // The payload: a `$ref` to an existing schema file.
  let validatePayload = null;
  let payloadNote;
  const payload = message.raw.payload;
  if (payload === undefined) {
    if (NO_PAYLOAD_SCHEMA[id]) {
      payloadNote = `no payload schema (allowed: ${NO_PAYLOAD_SCHEMA[id]})`;
    } else {
      fail(`${at}: no payload; it must be a $ref to its schema in docs/schemas/`);
    }
  } else if (!isObject(payload) || typeof payload.$ref !== 'string' || Object.keys(payload).length !== 1) {
    fail(`${at}.payload: must be only a $ref to its schema file (e.g. $ref: './schemas/<type>.json')`);
  } else {
    const file = path.resolve(documentDir, payload.$ref);
    if (path.dirname(file) !== schemaDir || !file.endsWith('.json')) {
      fail(`${at}.payload.$ref '${payload.$ref}': not a .json file in ${show(schemaDir)}/`);
    } else if (!fs.existsSync(file)) {
      fail(`${at}.payload.$ref '${payload.$ref}': ${show(file)} does not exist`);
    } else {
      usedSchemaFiles.add(path.basename(file));
      validatePayload = payloadValidator(file);
      payloadNote = `payload ${payload.$ref}`;
    }
  }

  // The headers schema, as the parser resolved it.
  let validateHeaders = null;
  if (message.parsed.hasHeaders()) {
    try {
      validateHeaders = ajv07.compile(withoutExtensions(message.parsed.headers().json()));
    } catch (error) {
      fail(`${at}.headers: not a usable schema: ${error.message}`);
    }
  }

  // The examples, as the parser read them.
  const examples = message.parsed.examples().all();
  if (examples.length === 0) {
    fail(`${at}: no examples; add at least one (payload, and headers where it has any)`);
    continue;
  }
  if (validatePayload && !examples.some((example) => example.hasPayload())) {
    fail(`${at}: no example has a payload`);
  }
  let valid = 0;
  examples.forEach((example, index) => {
    const label = `${at}.examples[${index}]${example.hasName() ? ` (${example.name()})` : ''}`;
    examplesChecked += 1;
    let ok = true;
    if (example.hasPayload() && validatePayload && !validatePayload(example.payload())) {
      ok = false;
      fail(`${label}.payload does not match ${payload.$ref}:\n${errorsOf(validatePayload)}`);
    }
    if (example.hasHeaders()) {
      if (!message.parsed.hasHeaders()) {
        ok = false;
        fail(`${label}.headers: the message has no headers schema`);
      } else if (validateHeaders && !validateHeaders(example.headers())) {
        ok = false;
        fail(`${label}.headers do not match the message's headers schema:\n${errorsOf(validateHeaders)}`);
      }
    }
    if (ok) valid += 1;
  });
  console.log(`  ${id}: ${payloadNote ?? 'payload not checked'}; ${valid} of ${examples.length} example(s) valid`);
}

for (const name of schemaFiles) {
  if (!usedSchemaFiles.has(name)) {
    fail(`${show(path.join(schemaDir, name))} is no message's payload`);
  }
}

if (failures > 0) {
  console.log(`${show(documentPath)}: ${failures} failure(s)`);
  process.exit(1);
}
console.log(
  `${show(documentPath)}: OK (AsyncAPI ${document.version()}; ${document.channels().length} channels, ` +
    `${document.operations().length} operations, ${messages.length} messages; ` +
    `${examplesChecked} examples valid; no errors, no unexplained diagnostics)`,
);
