package bodyterm

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/url"
	"strings"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/meshid/meshid/authz/input/internal/jsonterm"
)

// formTerm is a form body as a map of value lists, parsed as
// url.ParseQuery parses it, each pair (empty ones too) drawn from budget.
// What decodes to invalid UTF-8 is repaired as the plugin's trip through
// encoding/json repairs it (validText, listsTerm).
func formTerm(body string, budget *jsonterm.Budget) (*ast.Term, error) {
	if err := enterLists(budget); err != nil {
		return nil, err
	}
	lists := map[string][]*ast.Term{}
	var order []string
	for rest := body; rest != ""; {
		var pair string
		pair, rest, _ = strings.Cut(rest, "&")
		if err := budget.Spend(1); err != nil {
			return nil, err
		}
		if strings.Contains(pair, ";") {
			return nil, errors.New("invalid semicolon separator in query")
		}
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		k, err := url.QueryUnescape(k)
		if err != nil {
			return nil, err
		}
		if v, err = url.QueryUnescape(v); err != nil {
			return nil, err
		}
		if _, ok := lists[k]; !ok {
			order = append(order, k)
		}
		lists[k] = append(lists[k], ast.StringTerm(validText(v)))
	}
	budget.Leave()
	budget.Leave()
	return listsTerm(order, lists), nil
}

// enterLists opens the object of lists that form and multipart bodies
// are, and draws the object from budget.
func enterLists(budget *jsonterm.Budget) error {
	for range 2 {
		if err := budget.Enter(); err != nil {
			return err
		}
	}
	return budget.Spend(1)
}

// listsTerm is the object of lists of a form or multipart body, keyed as
// the plugin's trip through encoding/json leaves them: a key that is not
// valid UTF-8 is repaired (validText), and when repaired keys meet, the
// list of the greatest original key is the one kept, as encoding/json
// writes keys in order and a decoder keeps the last of two.
func listsTerm(order []string, lists map[string][]*ast.Term) *ast.Term {
	var winners map[string]string // repaired key → the original kept
	for _, k := range order {
		if utf8.ValidString(k) {
			continue
		}
		if winners == nil {
			winners = map[string]string{}
		}
		r := validText(k)
		if w, ok := winners[r]; !ok || k > w {
			winners[r] = k
		}
	}
	pairs := make([][2]*ast.Term, 0, len(order))
	for _, k := range order {
		key := validText(k)
		if w, ok := winners[key]; ok {
			if _, valid := lists[key]; valid && key > w {
				w = key
			}
			if k != w {
				continue
			}
		}
		pairs = append(pairs, ast.Item(ast.StringTerm(key), ast.ArrayTerm(lists[k]...)))
	}
	return ast.ObjectTerm(pairs...)
}

// validText is s as encoding/json writes a string: each byte that is not
// part of valid UTF-8 replaced by U+FFFD.
func validText(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return string([]rune(s))
}

// multipartTerm maps each form field name to the list of its values: JSON
// for parts whose content-type is JSON, the text otherwise; parts without
// a name are skipped, and a content-type without a boundary is null, as
// in the plugin. Each part is drawn from budget, and the values of its
// JSON too.
func multipartTerm(contentType, body string, budget *jsonterm.Budget) (*ast.Term, error) {
	_, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return nil, err
	}
	boundary, ok := params["boundary"]
	if !ok {
		return nullTerm, nil // the plugin leaves it unparsed
	}
	if err := enterLists(budget); err != nil {
		return nil, err
	}
	r := multipart.NewReader(strings.NewReader(body), boundary)
	lists := map[string][]*ast.Term{}
	var order []string
	for n := 1; ; n++ {
		part, err := r.NextPart()
		// Only the reader's own io.EOF is the end: wrapped, it is a body
		// that stops before its closing boundary, which the plugin
		// refuses.
		if err == io.EOF { //nolint:errorlint // see above
			break
		}
		if err != nil {
			return nil, err
		}
		// A JSON part is the values it holds, which Parse draws; a part
		// without a form name is skipped, as by the plugin, but still
		// costs what reading past it does.
		name := part.FormName()
		isJSON := name != "" && strings.Contains(part.Header.Get("Content-Type"), "application/json")
		if !isJSON {
			if err := budget.Spend(1); err != nil {
				return nil, fmt.Errorf("part %d: %w", n, err)
			}
		}
		if name == "" {
			continue
		}
		data, err := io.ReadAll(part)
		if err != nil {
			return nil, fmt.Errorf("part %d: %w", n, err)
		}
		var val *ast.Term
		if isJSON {
			if val, err = jsonterm.Parse(string(data), budget); err != nil {
				if BeyondLimits(err) {
					return nil, fmt.Errorf("part %s: %w", QuoteShort(name), err)
				}
				return nil, fmt.Errorf("part %s is declared JSON but is not: %w", QuoteShort(name), err)
			}
		} else {
			// A file part may be binary; what is not UTF-8 in it is
			// repaired, as the plugin's trip through encoding/json does.
			val = ast.StringTerm(validText(string(data)))
		}
		if _, ok := lists[name]; !ok {
			order = append(order, name)
		}
		lists[name] = append(lists[name], val)
	}
	budget.Leave()
	budget.Leave()
	return listsTerm(order, lists), nil
}
