package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/pelichan/pelichan/segment"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// readHead returns the first n bytes of the file at path (all of it if shorter): the way
// to read a small file of a known format (FORMAT, cursor, meta) whatever it has become.
func readHead(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, n))
}

// maxRecordBytes is the largest record Append accepts: a header and a payload of at most
// segment.MaxRawSize bytes, compressed. Neither compression expands data by a quarter
// (zstd adds a few bytes per 128 KiB block, S2 at most a sixth and 32 bytes), so no
// segment.Writer produces a larger one.
const maxRecordBytes = segment.HeaderSize + segment.MaxRawSize + segment.MaxRawSize/4

// maxSegmentFile is the largest segment file Open and the reader read (whole, into
// memory). A writer seals a segment once it reaches SegmentSize, so a segment holds at
// most SegmentSize bytes and one record more; the factor 4 leaves room for a spool
// reopened with a smaller SegmentSize than it was written with. A larger file is damage:
// the segment is set aside as NAME.bad, unread.
func (o Options) maxSegmentFile() int64 {
	return 4*o.SegmentSize + binary.MaxVarintLen64 + maxRecordBytes
}

// errFileTooLarge reports a segment file larger than maxSegmentFile.
type errFileTooLarge struct {
	size, limit int64
}

func (e *errFileTooLarge) Error() string {
	return fmt.Sprintf("%v: segment file of %d bytes, larger than a segment can grow (%d bytes: 4 × SegmentSize and the largest record)",
		ErrCorrupt, e.size, e.limit)
}

func (e *errFileTooLarge) Unwrap() error { return ErrCorrupt }

// readSegFile reads a segment file whole, unless it is larger than limit bytes.
func readSegFile(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if fi.Size() > limit {
		return nil, &errFileTooLarge{fi.Size(), limit}
	}
	// The size when looked at: a file growing meanwhile (a live writer, seen by Inspect)
	// is read as it was.
	buf := make([]byte, fi.Size())
	n, err := io.ReadFull(f, buf)
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		err = nil
	}
	return buf[:n], err
}

// meta file of a sealed segment: "pmet" | version 2 | 3 zero | records u64 | messages u64 |
// raw bytes u64 | first time i64 | last time i64 | replaces u64 | resume seg u64 |
// resume index u64 | resume offset u32 | crc32c of bytes 0..76. The resume index is a
// byte offset (see Cursor); in version 1 (still read) it is an entry index, translated
// at Open (see indexToOffset).
const metaSize = 80

type segMeta struct {
	records, messages, raw uint64
	first, last            int64
	// For a front segment (see Spool.Front): replaces is the earlier front segment whose
	// undelivered rest it holds (deleted at open if it still exists), and resume is where
	// reading goes on once this segment is read.
	replaces uint64
	resume   Cursor
	// resumeIndex: resume.Index is an entry index (a meta file of version 1), not yet
	// translated into an offset.
	resumeIndex bool
}

func encodeMeta(m segMeta) []byte {
	b := make([]byte, metaSize)
	copy(b, "pmet")
	b[4] = 2
	binary.LittleEndian.PutUint64(b[8:], m.records)
	binary.LittleEndian.PutUint64(b[16:], m.messages)
	binary.LittleEndian.PutUint64(b[24:], m.raw)
	binary.LittleEndian.PutUint64(b[32:], uint64(m.first))
	binary.LittleEndian.PutUint64(b[40:], uint64(m.last))
	binary.LittleEndian.PutUint64(b[48:], m.replaces)
	binary.LittleEndian.PutUint64(b[56:], m.resume.Seg)
	binary.LittleEndian.PutUint64(b[64:], m.resume.Index)
	binary.LittleEndian.PutUint32(b[72:], m.resume.Offset)
	binary.LittleEndian.PutUint32(b[76:], crc32.Checksum(b[:76], castagnoli))
	return b
}

func decodeMeta(b []byte) (segMeta, bool) {
	if len(b) != metaSize || string(b[:4]) != "pmet" || b[4] != 1 && b[4] != 2 ||
		crc32.Checksum(b[:76], castagnoli) != binary.LittleEndian.Uint32(b[76:]) {
		return segMeta{}, false
	}
	return segMeta{
		records:  binary.LittleEndian.Uint64(b[8:]),
		messages: binary.LittleEndian.Uint64(b[16:]),
		raw:      binary.LittleEndian.Uint64(b[24:]),
		first:    int64(binary.LittleEndian.Uint64(b[32:])),
		last:     int64(binary.LittleEndian.Uint64(b[40:])),
		replaces: binary.LittleEndian.Uint64(b[48:]),
		resume: Cursor{
			Seg:    binary.LittleEndian.Uint64(b[56:]),
			Index:  binary.LittleEndian.Uint64(b[64:]),
			Offset: binary.LittleEndian.Uint32(b[72:]),
		},
		resumeIndex: b[4] == 1 && binary.LittleEndian.Uint64(b[56:]) != 0,
	}, true
}

func (m *segMeta) add(h segment.Header) {
	if m.messages == 0 {
		m.first = h.Time
	}
	m.records++
	m.messages += uint64(h.Count)
	m.raw += uint64(h.RawLen)
	m.last = h.Time
}

// writeFileAtomic replaces path with data: temp file, fsync, rename, fsync of the directory.
func writeFileAtomic(path string, data []byte, sync bool) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if sync {
		return syncDir(filepath.Dir(path))
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// lockDir takes an exclusive flock on dir/LOCK. flock locks belong to the open file
// description, so a second opener in the same process is refused as well.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			if _, pid, _, _ := lockHolder(dir); pid == os.Getpid() {
				return nil, fmt.Errorf("%w (a Spool of this process, pid %d)", ErrLocked, pid)
			} else if pid > 0 {
				return nil, fmt.Errorf("%w (process %d)", ErrLocked, pid)
			}
			return nil, ErrLocked
		}
		return nil, fmt.Errorf("spool: lock: %w", err)
	}
	return f, nil
}

// Locked reports whether some process holds dir's lock, without taking it where it can.
//
// It looks in /proc/locks first, which touches nothing: it lists every flock with the
// device and inode of its file. Its limit: the kernel leaves out locks held by processes
// outside the caller's PID namespace (another container sharing the directory), which
// then look free. Where /proc/locks cannot be read (not Linux, no /proc), Locked probes
// the lock: it takes a shared flock on LOCK for an instant when no one holds it, and an
// Open that runs in that instant, in this process or another, fails with ErrLocked.
func Locked(dir string) (bool, error) {
	held, _, _, err := lockHolder(dir)
	return held, err
}

// lockHolder says whether a process holds dir's lock, the holder's pid when /proc/locks
// names it, and how it was found out: "/proc/locks", "flock probe", "no LOCK file", or
// "none" when LOCK could not even be looked at (err says why).
func lockHolder(dir string) (held bool, pid int, method string, err error) {
	p := filepath.Join(dir, lockName)
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, 0, "no LOCK file", nil
	}
	if err != nil {
		return false, 0, "none", err
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		if b, err := os.ReadFile("/proc/locks"); err == nil {
			held, pid := procLocksHolder(string(b), uint64(st.Dev), uint64(st.Ino))
			return held, pid, "/proc/locks", nil
		}
	}
	held, err = probeLock(p)
	return held, 0, "flock probe", err
}

// probeLock tries a shared flock on the LOCK file p and releases it at once: whoever
// holds the exclusive lock makes it fail. For that instant a concurrent Open is refused.
func probeLock(p string) (bool, error) {
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false, nil
}

// procLocksHolder finds an exclusive flock on the file (dev, ino) in the text of
// /proc/locks, whose lines read
//
//	1: FLOCK  ADVISORY  WRITE 1234 fe:00:9984050 0 EOF
//
// (device major and minor in hex, inode in decimal; waiters are marked "->"). A shared
// flock is someone's probe, not an opener.
func procLocksHolder(text string, dev, ino uint64) (bool, int) {
	// Linux's encoding of dev_t, as glibc's major() and minor() decode it.
	major := (dev>>8)&0xfff | (dev>>32)&^uint64(0xfff)
	minor := dev&0xff | (dev>>12)&^uint64(0xff)
	for line := range strings.SplitSeq(text, "\n") {
		f := strings.Fields(line)
		i := slices.Index(f, "FLOCK")
		if i < 0 || len(f) < i+5 || slices.Contains(f, "->") || f[i+2] != "WRITE" {
			continue
		}
		id := strings.Split(f[i+4], ":")
		if len(id) != 3 {
			continue
		}
		ma, err1 := strconv.ParseUint(id[0], 16, 64)
		mi, err2 := strconv.ParseUint(id[1], 16, 64)
		in, err3 := strconv.ParseUint(id[2], 10, 64)
		if err1 == nil && err2 == nil && err3 == nil && ma == major && mi == minor && in == ino {
			pid, _ := strconv.Atoi(f[i+3])
			return true, pid
		}
	}
	return false, 0
}
