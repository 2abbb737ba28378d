package input_test

import (
	"testing"

	"github.com/meshid/meshid/authz/input"
)

// TestBodiesSeenByPolicies: form and multipart bodies as parsed_body.
func TestBodiesSeenByPolicies(t *testing.T) {
	tests := []struct {
		name, contentType, body, holds string
	}{
		{"form", "application/x-www-form-urlencoded", "a=1&b=x%20y&a=2", `input.parsed_body == {"a": ["1", "2"], "b": ["x y"]}`},
		{"multipart", "multipart/form-data; boundary=foo",
			"--foo\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nada\r\n" +
				"--foo\r\nContent-Disposition: form-data; name=\"meta\"\r\nContent-Type: application/json\r\n\r\n{\"n\": 1}\r\n" +
				"--foo\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nlovelace\r\n--foo--\r\n",
			`input.parsed_body == {"name": ["ada", "lovelace"], "meta": [{"n": 1}]}`},
		{"multipart with LF line ends", "multipart/form-data; boundary=foo",
			"--foo\nContent-Disposition: form-data; name=\"foo\"\nContent-Type: text/plain\n\nbar\n--foo--\n",
			`input.parsed_body == {"foo": ["bar"]}`},
		{"multipart with a binary file", "multipart/form-data; boundary=foo",
			"--foo\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n\r\n\xff\x00\xfe\r\n--foo--\r\n",
			`count(input.parsed_body.file[0]) == 3`},
		{"text is not parsed", "text/plain", "a=1", `input.parsed_body == null`},
		{"form truncated", "application/x-www-form-urlencoded", "a=1", `input.truncated_body`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := checkRequest(frontend, backend, "POST", "/form")
			req.Attributes.Request.Http.Headers["content-type"] = tt.contentType
			req.Attributes.Request.Http.Body = tt.body
			if tt.name == "multipart with a binary file" {
				// Binary bodies come as bytes (with_request_body.pack_as_bytes):
				// a string field must be UTF-8.
				req.Attributes.Request.Http.Body = ""
				req.Attributes.Request.Http.RawBody = []byte(tt.body)
			}
			if tt.name == "form truncated" {
				req.Attributes.Request.Http.Headers["content-length"] = "100"
			}
			doc, err := newBuilder(t, input.Options{}).Build(req)
			if err != nil || !holds(t, doc, tt.holds) {
				t.Errorf("does not hold: %s (%v)", tt.holds, err)
			}
		})
	}
}
