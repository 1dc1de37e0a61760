import { isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, Scalar, visit, YAMLMap, YAMLSeq, Node as YamlNode } from 'yaml';
import { MAX_BODY_DEPTH } from '../../common/http/json-depth';
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
  // Before anything walks the tree recursively (visit, toJS, the validator): a spec nested deeper
  // than any real one is refused. The YAML composer itself recurses, and reports running out of
  // stack on far deeper input as RESOURCE_EXHAUSTION: that is the same problem.
  const exhausted = doc.errors.find((e) => e.code === 'RESOURCE_EXHAUSTION');
  const deep = nodeDeeperThan(doc.contents, MAX_BODY_DEPTH);
  if (exhausted || deep) {
    const at = deep?.range ? lineCounter.linePos(deep.range[0]) : exhausted?.linePos?.[0];
    const reason = `spec nests lists and mappings more than ${MAX_BODY_DEPTH} levels deep; the limit is ${MAX_BODY_DEPTH}`;
    return { ...none, violations: [{ path: '', reason, line: at?.line, column: at?.col }] };
  }
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

/** The first list or mapping more than `max` levels deep (the top level is 1), found without recursion. */
function nodeDeeperThan(root: unknown, max: number): YamlNode | undefined {
  const stack: [unknown, number][] = [[root, 0]];
  while (stack.length > 0) {
    const [node, outer] = stack.pop()!;
    if (!isMap(node) && !isSeq(node)) continue;
    const level = outer + 1;
    if (level > max) return node;
    for (const item of (node as YAMLMap | YAMLSeq).items as unknown[]) {
      if (isPair(item)) stack.push([item.key, level], [item.value, level]);
      else stack.push([item, level]);
    }
  }
  return undefined;
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
