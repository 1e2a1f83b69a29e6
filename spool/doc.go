// Package spool keeps pelichan's records on disk: one writer appends records at the tail,
// one reader reads them from a persistent cursor on, and whole consumed segments are
// deleted. A Spool is owned by one goroutine.
//
// # Layout
//
//	DIR/FORMAT                      "pelichan-spool 1\n": a spool of another version is refused (ErrVersion)
//	DIR/LOCK                        flock'd by the opener (ErrLocked for a second one, in any process)
//	DIR/cursor                      the read position, segment number marks and the owner's extra bytes, with a CRC-32C
//	DIR/<20-digit seq>/             one segment: a tidwall/wal log directory (binary format) holding
//	    00000000000000000001        the log's only file: entries framed as uvarint length + record
//	    meta                        counts and times, written when the segment is sealed (and a front segment's resume cursor)
//	DIR/<seq>.bad, <seq>.N.bad      a segment set aside as evidence of damage (never deleted by us)
//	DIR/<seq>.<nanos>.broken        bytes cut from a torn tail (the newest 8 kept, 1 MiB each)
//
// Records are segment package records. A position (Cursor) names a record by its segment
// and the byte offset of its framing (its uvarint length) in the segment's WAL file, and
// says how many messages of that record were already delivered. Append returns that
// position, Next returns it in Record.Pos, and pelichan's message IDs are built from it.
// Damage elsewhere in a file never changes where a record starts, so a position names the
// same record in every session, whatever happened to the records around it.
//
// # The cursor file
//
// Version 4, little endian, replaced atomically by Checkpoint and Close (and skipped when
// nothing changed):
//
//	+--------+----+-------+-----+-------+--------+------+-----+-----------+----+-------+--------+
//	| "pcur" | 04 | 0 0 0 | seg | index | offset | high | low | delivered | n  | extra | crc32c |
//	|   4    | 1  |   3   |  8  |   8   |   4    |  8   |  8  |     8     | 4  |   n   |   4    |
//	+--------+----+-------+-----+-------+--------+------+-----+-----------+----+-------+--------+
//
// seg, index and offset are the acknowledged position (Cursor): every record of segment
// seg at a byte offset less than index is delivered (and every record of the segments
// before it), and so are the first offset messages of the record at byte offset index.
// high and low are the highest and lowest segment numbers ever created in the directory;
// delivered how many messages of segment seg lie before the position (2^64-1: not known),
// so that Open counts the backlog without reading the segment; extra the owner's bytes
// (SetExtra, at most MaxExtra); the CRC-32C (Castagnoli) covers every byte before it.
//
// The reader trusts index: it reads the record framed at that offset (CRC-checked) without
// walking the segment from its start. A cursor file written by someone else, pointing into
// the middle of a record whose payload holds a whole framed record (zstd and S2 store
// incompressible bytes as they are), would have that embedded record delivered: the
// spool directory must be writable by its owner alone.
//
// Older versions are still read, and replaced by version 4 at the next checkpoint.
// Version 3 has the layout above without delivered (Open then counts by scanning the
// segment). Version 2 has the layout of version 3 with 02, and its index is the record's
// 1-based entry index in the segment, as the scanner counts entries (a damaged stretch
// counts as one entry, whatever it swallowed): Open translates it into the record's byte
// offset by scanning the cursor's segment (an index past the last entry becomes the end
// of the file), keeping that version's rule for damage that may have shifted entry
// indexes: where a damaged stretch in front of the position is not exactly one framed
// entry, or entries are missing against the count recorded at sealing, reading resumes at
// the first such stretch, without the message offset (duplicates, never loss). Version 1
// (32 bytes: "pcur", 01, three zero bytes, seg, index (an entry index), offset, CRC-32C
// of the 28 bytes before it) has no marks and no extra bytes. These layouts are part of
// the on-disk format.
//
// # Segment numbers
//
// A segment number is never used twice in a directory's life, so a position (segment,
// byte offset) names one record for good: pelichan's message IDs are built from it. New segments
// are numbered above the high mark, front segments (see Front) below the low mark. At Open
// the marks are the cursor file's, raised and lowered by every number found in the
// directory (segments, and NAME.bad, NAME.*.broken, NAME.del.tmp files). Before the
// segment with the highest (or lowest) number present is deleted while the marks last
// written do not cover it, the cursor file is rewritten (best effort: deleting frees
// space, and a full disk must not stop it). The residual cases: if the cursor file is lost
// or damaged, or that rewrite failed and the process then crashed, and every segment (and
// evidence file) numbered above some number is gone too, numbers above the highest left
// are used again (from 1<<32 on in an empty directory).
//
// # Message IDs
//
// A stored message is named by its segment number, its record's byte offset in the
// segment's WAL file (Cursor.Index) and its position in the record. pelichan exposes this
// as MsgID, with the text form "SEG.OFFSET.MSG" in decimal (for example
// "4294967297.1536.3"). It never changes while the message is stored (no segment is
// rewritten, and damage elsewhere does not move a record), and it never repeats within a
// spool directory's life, because segment numbers are never reused (see Segment numbers).
// It is not unique across directories: spools shipping into one sink need a prefix of
// their own.
//
// # Segments and deletion
//
// Each segment is its own tidwall/wal log directory, sealed (closed and fsynced) when its
// file reaches Options.SegmentSize; the next Append starts a new one, numbered higher (see Segment
// numbers). A consumed segment is deleted whole with one RemoveAll. The alternative
// tidwall/wal allows without rewriting a whole segment is one wal.Log for the spool and
// TruncateFront(firstIndexOfNextSegment-1), which rewrites one entry per deletion.
// BenchmarkDeleteOneLogPerSegment and BenchmarkDeleteTruncateFront measured, per deleted
// 4 MiB segment on this project's 2-core machine (median of 3): 2.0 ms and nothing
// rewritten, against 3.7 ms and one 64 KiB entry rewritten. One log per segment also keeps
// the reader independent of the writer's log, confines a failed write to one segment, and
// leaves room to put a segment in front of the backlog (see Front). No segment is ever
// rewritten.
//
// The segment being written is written by this package (segFile), in exactly the bytes
// tidwall/wal's Log.Write writes in its binary format, so tidwall/wal reads it
// (TestSegFileTidwallReadsIt). Through a wal.Log, the whole segment being written was kept
// in memory in a buffer regrown as it filled: about five bytes allocated and four copied
// for each byte written. BenchmarkSpill/sync=never, 1M lines, three interleaved runs on
// this project's 2-core machine: 851-1004 ns/op and 282 B/op with wal.Log, 738-870 ns/op
// and 6 B/op with segFile; with S2 compression, same set-up, 1213-1395 against 559-567
// ns/op. Front segments (written once, whole) are still written through a wal.Log.
//
// Memory: the segment being written is not kept in memory. A sealed segment is read
// record by record, and whole only where Reading says, so a reader holds about
// SegmentSize at most (2 MiB by default), whatever the backlog.
//
// # Reading
//
// The segment being written is read back from its file, record by record at the offsets
// its writer recorded (pread), each record's CRC checked; a record that does not check
// seals the segment there, and the rest of it is read as a sealed segment is. A sealed
// segment is read with
// this package's own scanner over tidwall/wal's binary framing: tidwall/wal refuses a whole
// log for one bad byte, while the scanner checks each record's header and CRC, skips what
// is damaged (reported as *CorruptionError with segment, entry index as the scanner counts
// entries, and byte offset, wrapping ErrCorrupt), and resynchronises at the next offset where a valid framed record starts, so
// damage costs only the records it touches. A segment with damage is renamed NAME.bad once
// consumed instead of being deleted.
//
// A sealed segment is read record by record (a 32 KiB first read from the position, then
// 256 KiB reads, never past the file's end), each record framed and its CRC checked as it
// comes, so the first record costs one small read whatever the segment's size. The file
// is read whole and scanned as above only when a record there is not valid, or when its
// end cannot be confirmed: against the end the writer recorded, or the record count the
// segment was sealed with when reading began at its start.
//
// The reader's position is a Cursor: it reads the records at byte offsets from the
// cursor's on, skipping the cursor's message offset in the record that starts exactly
// there. The Spool keeps the byte offset of each entry of the segment being written. A segment is consumed (deleted, or
// set aside if damaged) once the acknowledged cursor lies past its last valid record
// (known from writing it or from a scan, and not trusted when whole entries are missing
// against the count recorded at sealing), or once the reader has read all of it and every
// record read from it is acknowledged.
//
// No file makes this cost more than a small multiple of its size: resynchronising tries
// only the offsets just before an occurrence of the record magic, skips a candidate whose
// length runs past the end of the file or whose header is impossible, checks each
// candidate's CRC at most once, and checks at most 4 × the file size + 16 MiB of CRCs in
// all (a real file needs about its size once). A file crafted to exceed that (a plausible
// header every few bytes, each claiming megabytes) is read as far as that budget allows;
// the rest of it is one damaged stretch, reported and kept (never cut as a torn tail). A
// crafted 16 MiB tail opens in well under a second (TestOpenCraftedSegment).
//
// A segment file is read whole, so its size is checked first: a writer seals a segment
// once it reaches SegmentSize, so it holds at most SegmentSize bytes and one record (of
// at most segment.MaxRawSize bytes compressed: 80 MiB are allowed for it, and Append
// refuses a larger one). A file larger than 4 × SegmentSize
// plus the largest record (the factor leaves room for reopening with a smaller
// SegmentSize) is damage: the segment is set aside as NAME.bad, unread, and reported. Do
// not reopen a spool with a SegmentSize less than a quarter of the one it was written
// with. Small files (FORMAT, cursor, meta) are read only as far as a valid one can go.
//
// # Recovery at Open
//
// Before anything is read or written:
//   - leftovers of interrupted atomic writes (*.tmp) are removed;
//   - each segment's counts come from its meta file; a segment without a valid one (the
//     newest after a crash) is scanned, and if the scan finds fewer entries than its meta
//     recorded, the shortfall is reported (a sealed segment was fsynced before its meta
//     was written, so no crash removes whole entries from it);
//   - the newest segment's torn or garbage tail, if it has no valid meta file (a crash mid-write; zero bytes appended by
//     a filesystem count as garbage, since they parse as empty tidwall entries) is cut back
//     to the last whole valid record, and the cut bytes are kept as DIR/<seq>.<nanos>.broken;
//   - a segment that cannot be read at all, or whose file is larger than a segment can
//     grow (see Reading), is renamed NAME.bad and reported;
//   - a missing or damaged cursor means reading from the first segment (duplicates, never
//     loss), with no extra bytes; a missing or damaged one, or one naming no segment, is
//     replaced at once (best effort; on a new spool it names where the first segment will
//     begin), so that a front segment is never the first thing read for want of a cursor
//     file; a cursor past the last segment is reported and treated
//     the same way, unless it names the very start of the segment numbered right after the
//     last one (what the reader writes once it has read the last one): then every segment
//     is consumed, and nothing is reported (a kill after that checkpoint and before the
//     deletion leaves it), or unless the only segment present is a front segment and the
//     cursor is exactly its resume cursor (likewise: it has been read); a cursor into a deleted segment means the start of the next one (never
//     a front segment's: it is checkpointed past one before deleting it); a cursor of an
//     older version (an entry index) is translated into a byte offset (see The cursor
//     file), and so is a front segment's resume cursor in a meta file of version 1;
//   - segments wholly before the cursor (whose deletion had not reached the disk) are
//     deleted (by renaming to *.tmp first, so a kill never leaves half a segment), and an
//     interrupted Front is completed;
//   - reading starts at the first valid record at or after the cursor's byte offset; its
//     message offset applies only to a record that starts exactly there (if that record is
//     damaged, the next one is delivered whole). Damage in front of the cursor cannot move
//     it, so no rule guesses where reading resumes.
//
// New records always go to a new segment: the newest one found at Open is never appended
// to again.
//
// Open loads only what reading needs at once: the cursor's segment, the one a front
// segment resumes in, and the newest. The other segments' counts are read in the
// background, so Open costs about the same whatever the backlog (BenchmarkOpenBacklog:
// 0.35 ms, 1.0 ms and 2.9 ms to the first record with 100, 1000 and 3000 segments; 4, 35
// and 80 ms when every meta file was read first). The first record is read on its own
// (see Reading), not with its whole segment file. Stats waits for that counting; Peek does
// not.
//
// # Durability
//
// With NoSync false, Sync fsyncs the segment being written and waits for the fsync of
// every segment sealed since the last Sync (the record that fills a segment seals it),
// so that every record appended before Sync is durable when it returns. Sealing (in the
// background) fsyncs the segment (also with NoSync, as tidwall/wal's Close always did) and
// then writes its meta atomically. Creating a segment fsyncs its directory (the WAL
// file's name) and the spool directory (the segment's name) before a record is appended
// to it. The next segment is created ahead, in the background, as soon as one becomes
// the segment being written (a spare: an empty WAL file; Close removes it, and one a
// crash left stays as an empty segment, Open repairing the tail of the segment before it),
// so that a rotation does not wait for those fsyncs;
// deleting a segment and replacing the cursor (temp file, fsync, rename, fsync of the
// directory) are durable before they are relied on. A failed write closes the
// segment's file for good, cuts it back to its last whole record and seals it; the next
// Append starts a new segment.
//
// # Front segments
//
// Front, used at shutdown in ordered mode, writes the messages taken back from Out into a
// segment numbered below all others. Its meta (version 2: "pmet", 02, three zero bytes,
// records, messages, raw bytes, first and last time, replaces, resume seg, resume index (a
// byte offset), resume offset, CRC-32C; version 1 had an entry index there) holds a
// resume cursor, the cursor at that moment: once the front segment is read, reading goes on there, so no stored segment is
// copied or rewritten. A front segment written while the cursor is inside an earlier one
// takes over the earlier one's small undelivered rest and resume cursor, and names it in
// its meta. Segments between a front segment and the one its resume cursor names are
// consumed: that earlier front segment, and segments whose deletion KeepConsumed held
// back until the front segment's checkpoint (the ordered shutdown acknowledges the
// messages it takes back before Front holds them). Front deletes them after its
// checkpoint (Close tries again if that failed), Open after a crash there, and the reader
// never reads them. New segments are never numbered between a front segment and its
// resume cursor's segment.
package spool
