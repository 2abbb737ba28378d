package echo

import (
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

// Each case is cut once and checked both ways: Clip's text and Quote's.
func TestClipAndQuote(t *testing.T) {
	tests := []struct {
		name        string
		s           string
		n           int
		clip, quote string
	}{
		{"shorter is whole", `say "hi"`, 16, `say "hi"`, `"say \"hi\""`},
		{"exactly n is whole", "abcd", 4, "abcd", `"abcd"`},
		{"empty is whole", "", 0, "", `""`},
		{"longer is cut and says its length", "abcdef", 4, "abcd… (6 bytes)", `"abcd"… (6 bytes)`},
		{"cut before a character it would split", "aé", 2, "a… (3 bytes)", `"a"… (3 bytes)`}, // é is 2 bytes
		{"cut after a character that fits", "aéb", 3, "aé… (4 bytes)", `"aé"… (4 bytes)`},
		{"a 4-byte character is not split", "ab😀", 5, "ab… (6 bytes)", `"ab"… (6 bytes)`},
		{"nothing fits", "😀", 3, "… (4 bytes)", `""… (4 bytes)`},
		{"zero keeps nothing", "abc", 0, "… (3 bytes)", `""… (3 bytes)`},
		{"below zero keeps nothing", "abc", -5, "… (3 bytes)", `""… (3 bytes)`},
		{"invalid UTF-8 is cut by bytes", "a\xff\xfe\xfd", 2, "a\xff… (4 bytes)", `"a\xff"… (4 bytes)`}, // \xff is no continuation byte
		{"stray continuation bytes go with the byte before them", "ab\x80\x80c", 3, "a… (5 bytes)", `"a"… (5 bytes)`},
		{"control bytes are escaped after the cut", "\x00\x01\x02\x03", 2, "\x00\x01… (4 bytes)", `"\x00\x01"… (4 bytes)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Clip(tt.s, tt.n); got != tt.clip {
				t.Errorf("Clip(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.clip)
			}
			if got := Quote(tt.s, tt.n); got != tt.quote {
				t.Errorf("Quote(%q, %d) = %s, want %s", tt.s, tt.n, got, tt.quote)
			}
		})
	}
}

func TestClipAll(t *testing.T) {
	tests := []struct {
		name string
		ss   []string
		want []string
	}{
		{"none", nil, []string{}},
		{"each on its own", []string{"ROOTCA", strings.Repeat("x", 10)}, []string{"ROOTCA", "xxxxxxxx… (10 bytes)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ClipAll(tt.ss, 8)
			if fmt.Sprint(got) != fmt.Sprint(tt.want) || len(got) != len(tt.want) {
				t.Errorf("ClipAll(%q, 8) = %q, want %q", tt.ss, got, tt.want)
			}
		})
	}
}

// Whatever the input, the kept part is a prefix of s no longer than n,
// valid UTF-8 when s is, and the note gives s's length.
func FuzzClip(f *testing.F) {
	f.Add("spiffe://example.org/ns/demo/sa/backend", 12)
	f.Add("éééé", 3)
	f.Add("a\xff\x80😀", 2)
	f.Fuzz(func(t *testing.T, s string, n int) {
		got := Clip(s, n)
		if len(s) <= n {
			if got != s {
				t.Fatalf("Clip(%q, %d) = %q, want it whole", s, n, got)
			}
			return
		}
		note := fmt.Sprintf("… (%d bytes)", len(s))
		head, ok := strings.CutSuffix(got, note)
		if !ok || len(head) > max(n, 0) || !strings.HasPrefix(s, head) {
			t.Fatalf("Clip(%q, %d) = %q, want a prefix of at most %d bytes and %q", s, n, got, max(n, 0), note)
		}
		if utf8.ValidString(s) && !utf8.ValidString(head) {
			t.Fatalf("Clip(%q, %d) split a character: %q", s, n, head)
		}
	})
}
