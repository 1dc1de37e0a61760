import { call } from './http';

/** Adds a member with roles to the caller's org and returns the member's id and a fresh token. */
export async function addMember(baseUrl: string, adminToken: string, org: string, email: string, roles: string[]): Promise<{ id: string; token: string }> {
  const user = await call(baseUrl, 'POST', `/v1/orgs/${org}/users`, { token: adminToken, body: { email, roles } });
  if (user.status !== 201) throw new Error(`adding ${email}: ${user.status} ${user.text}`);
  const token = await call(baseUrl, 'POST', `/v1/orgs/${org}/users/${user.body.user_id}/tokens`, { token: adminToken, body: { name: 'test' } });
  if (token.status !== 201) throw new Error(`token for ${email}: ${token.status} ${token.text}`);
  return { id: user.body.user_id, token: token.body.token };
}

/** POSTs a YAML spec. */
export function postYaml(baseUrl: string, path: string, token: string, yaml: string) {
  return call(baseUrl, 'POST', path, { token, rawBody: yaml, headers: { 'content-type': 'application/yaml' } });
}
