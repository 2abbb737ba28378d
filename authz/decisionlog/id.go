package decisionlog

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"time"
)

// NewID is a decision id: a UUID, as OPA's decision ids are, of version 7,
// whose first 48 bits are the Unix time in milliseconds it was made at.
// The time is what lets `meshid policy why` tell a decision rotated out
// of the log from an id that was never logged.
func NewID(now time.Time) string {
	var b [16]byte
	rand.Read(b[6:]) // crypto/rand never fails on Linux
	var ms [8]byte
	binary.BigEndian.PutUint64(ms[:], uint64(now.UnixMilli()))
	copy(b[0:6], ms[2:])
	b[6] = b[6]&0x0f | 0x70
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

// IDTime is the time a decision id made by NewID was made at, to the
// millisecond; false for anything else (an OPA decision id, a random
// UUID, a typo).
func IDTime(id string) (time.Time, bool) {
	if !ValidID(id) {
		return time.Time{}, false
	}
	var b [16]byte
	src := id[0:8] + id[9:13] + id[14:18] + id[19:23] + id[24:]
	if _, err := hex.Decode(b[:], []byte(src)); err != nil {
		return time.Time{}, false
	}
	if b[6]>>4 != 7 || b[8]>>6 != 2 {
		return time.Time{}, false
	}
	var ms [8]byte
	copy(ms[2:], b[0:6])
	return time.UnixMilli(int64(binary.BigEndian.Uint64(ms[:]))), true
}
