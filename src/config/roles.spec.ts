import { ALL_ROLES, parseRoles, Role, UnknownRoleError } from './roles';

describe('parseRoles', () => {
  it('expands all, keeps a canonical order and collapses duplicates', () => {
    expect(parseRoles('all')).toEqual(ALL_ROLES);
    expect(parseRoles(' Query,registry ,query')).toEqual([Role.Registry, Role.Query]);
  });

  it('rejects unknown and empty lists, naming the valid roles', () => {
    expect(() => parseRoles('registry,bogus,nope')).toThrow('unknown roles "bogus", "nope"; valid roles are: all, dispatcher, registry, query, sink, delivery, wrapper');
    expect(() => parseRoles(' , ')).toThrow(UnknownRoleError);
    expect(() => parseRoles('all,bogus')).toThrow('"bogus"');
  });
});
