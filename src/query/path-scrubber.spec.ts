import { PathScrubber } from './path-scrubber';

describe('PathScrubber', () => {
  const scrubber = new PathScrubber([
    ['/srv/trace/objects', '<object store>'],
    ['/srv/trace', '<data dir>'],
    ['/srv/trace/scratch/', '<scratch>'],
    ['/', '<root>'],
  ]);

  it('replaces the server directories, the longest first, on path boundaries only', () => {
    expect(scrubber.scrub('IO Error: File "/srv/trace/objects/org/1/0_249.parquet" too small')).toBe('IO Error: File "<object store>/org/1/0_249.parquet" too small');
    expect(scrubber.scrub("Permission Error: Cannot access file '/srv/trace/scratch/query-x/spill'")).toBe("Permission Error: Cannot access file '<scratch>/query-x/spill'");
    expect(scrubber.scrub('/srv/trace and /srv/trace/pg')).toBe('<data dir> and <data dir>/pg');
    expect(scrubber.scrub('/srv/traceless/x')).toBe('/srv/traceless/x');
  });

  it('never treats "/" as a directory to hide', () => {
    expect(scrubber.scrub('1/2 is not a path')).toBe('1/2 is not a path');
  });
});
