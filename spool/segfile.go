package spool

// The segment being written: appending records to its WAL file and reading them back.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// segFile is the WAL file of the segment being written. It writes exactly the bytes
// tidwall/wal's Log.Write writes in its binary format (each record framed by its length
// as a uvarint), into the file wal.Open creates in an empty directory (walFile), so
// tidwall/wal, this package's scanner, spoolinspect and older builds read it alike
// (TestSegFileTidwallReadsIt checks both ways).
//
// It is written here rather than through a wal.Log because wal.Log keeps the whole
// segment being written in memory, in a buffer regrown as the segment fills: about five
// times each byte written in allocations and four times in copies, which cost the spill
// path more than the compressor did with S2 (BenchmarkSpill, see the package doc). Records
// of the segment being written are read back from the file (pread) instead.
type segFile struct {
	f   *os.File
	buf []byte // the framed record, reused for records up to maxKeptFrame
}

// maxKeptFrame is the largest framing buffer kept for the next record (a record of a
// 64 KiB batch takes at most about 66 KiB); a larger record, from a large batch or a
// message larger than a batch, gets one of its own. Spool.DropBuffers lets go of it.
const maxKeptFrame = 256 << 10

// createSegFile makes the segment directory dir and its empty WAL file, with
// tidwall/wal's permissions as walOptions sets them.
func createSegFile(dir string) (*segFile, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(dir, walFile), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o640)
	if err != nil {
		return nil, err
	}
	return &segFile{f: f}, nil
}

// openSegFile opens the empty WAL file of a segment made ahead (a spare).
func openSegFile(dir string) (*segFile, error) {
	f, err := os.OpenFile(filepath.Join(dir, walFile), os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err == nil && fi.Size() != 0 {
		err = fmt.Errorf("%s: %d bytes, want an empty file", f.Name(), fi.Size())
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return &segFile{f: f}, nil
}

// append writes rec, framed, at the end of the file with one write. On an error the file
// may hold part of the frame: the caller cuts it back (see Spool.abandon).
func (w *segFile) append(rec []byte) error {
	b := binary.AppendUvarint(w.buf[:0], uint64(len(rec)))
	b = append(b, rec...)
	_, err := w.f.Write(b)
	if cap(b) <= maxKeptFrame {
		w.buf = b
	} else {
		w.buf = nil
	}
	return err
}

// readAt reads the framed record that occupies [off, end) of the file and returns the
// record, in a buffer of its own.
func (w *segFile) readAt(off, end int64) ([]byte, error) {
	if off < 0 || end <= off || end-off > maxRecordBytes+binary.MaxVarintLen64 {
		return nil, fmt.Errorf("frame at [%d, %d): impossible bounds", off, end)
	}
	buf := make([]byte, end-off)
	if _, err := w.f.ReadAt(buf, off); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	n, k := binary.Uvarint(buf)
	if k <= 0 || n != uint64(len(buf)-k) {
		return nil, fmt.Errorf("frame at offset %d: length prefix does not match the %d bytes written", off, len(buf))
	}
	return buf[k:], nil
}

// sync fsyncs the file.
func (w *segFile) sync() error { return w.f.Sync() }

// close fsyncs and closes the file; the file is closed whatever the fsync returned.
func (w *segFile) close() error {
	err := w.f.Sync()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	w.buf = nil
	return err
}
