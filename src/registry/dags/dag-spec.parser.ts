import { isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, Scalar, visit, YAMLMap, YAMLSeq, Node as YamlNode } from 'yaml';
import { LIMITS, SpecViolation } from './dag-spec';

export interface ParsedSpec {
  value?: unknown;
  violations: SpecViolation[];
  /** Finds the line/column of a validation path (`jobs[1].inputs[0]`) in the source, if known. */
  locate(path: string): { line: number; column: number } | undefined;
}

/**
 * Parses a spec given as YAML or JSON (JSON is YAML) with a size limit, reporting syntax errors
 * with line and column. Aliases, custom tags and duplicate keys are refused: a spec is data.
 */
export function parseSpecText(text: string): ParsedSpec {
  const none: ParsedSpec = { violations: [], locate: () => undefined };
  const bytes = Buffer.byteLength(text, 'utf8');
  if (bytes > LIMITS.specBytes) {
    return { ...none, violations: [{ path: '', reason: `spec is ${bytes} bytes; the limit is ${LIMITS.specBytes}` }] };
  }
  if (text.trim() === '') return { ...none, violations: [{ path: '', reason: 'spec is empty' }] };
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: true, schema: 'core' });
  // Warnings (unknown tags such as !foo or !!binary) are refused too: a spec is plain data.
  const violations: SpecViolation[] = [...doc.errors, ...doc.warnings].map((e) => {
    const pos = e.linePos?.[0];
    const message = e.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
    return { path: '', reason: `malformed YAML: ${message}`, line: pos?.line, column: pos?.col };
  });
  visit(doc, {
    Node: (_key, node) => {
      const n = node as YamlNode & { anchor?: string; tag?: string };
      const at = n.range ? lineCounter.linePos(n.range[0]) : undefined;
      if (n.anchor) violations.push({ path: '', reason: 'YAML anchors and aliases (&name / *name) are not allowed in a DAG spec', line: at?.line, column: at?.col });
      else if (n.tag) violations.push({ path: '', reason: `YAML tags (${n.tag}) are not allowed in a DAG spec`, line: at?.line, column: at?.col });
    },
  });
  if (violations.length > 0) return { ...none, violations };
  let value: unknown;
  try {
    value = doc.toJS({ maxAliasCount: 0 });
  } catch (err) {
    const aliases = /alias/i.test((err as Error).message);
    return { ...none, violations: [{ path: '', reason: aliases ? 'YAML anchors and aliases (&name / *name) are not allowed in a DAG spec' : `malformed YAML: ${(err as Error).message}` }] };
  }
  return {
    value,
    violations: [],
    locate: (path) => {
      const node = nodeAt(doc.contents as YamlNode | null, path);
      if (!node?.range) return undefined;
      const { line, col } = lineCounter.linePos(node.range[0]);
      return { line, column: col };
    },
  };
}

/** Walks `jobs[1].inputs[0].from` down the YAML tree, stopping at the deepest node that exists. */
function nodeAt(root: YamlNode | null, path: string): YamlNode | undefined {
  let node: YamlNode | null | undefined = root;
  let found: YamlNode | undefined = root ?? undefined;
  for (const part of path.match(/[^.[\]]+/g) ?? []) {
    if (isMap(node)) {
      const pair: { key: unknown; value: unknown } | undefined = (node as YAMLMap).items.find(
        (p) => isPair(p) && isScalar(p.key) && String((p.key as Scalar).value) === part,
      );
      node = pair ? ((pair.value as YamlNode | null) ?? (pair.key as YamlNode)) : undefined;
    } else if (isSeq(node) && /^\d+$/.test(part)) {
      node = (node as YAMLSeq).items[Number(part)] as YamlNode | undefined;
    } else {
      node = undefined;
    }
    if (!node) break;
    found = node;
  }
  return found;
}
