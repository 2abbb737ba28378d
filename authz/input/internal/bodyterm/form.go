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
		if !utf8.ValidString(k) {
			return nil, fmt.Errorf("query key decodes to %w", errInvalidUTF8)
		}
		if !utf8.ValidString(v) {
			return nil, fmt.Errorf("query value of %s decodes to %w", QuoteShort(k), errInvalidUTF8)
		}
		if _, ok := lists[k]; !ok {
			order = append(order, k)
		}
		lists[k] = append(lists[k], ast.StringTerm(v))
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

func listsTerm(order []string, lists map[string][]*ast.Term) *ast.Term {
	pairs := make([][2]*ast.Term, 0, len(order))
	for _, k := range order {
		pairs = append(pairs, ast.Item(ast.StringTerm(k), ast.ArrayTerm(lists[k]...)))
	}
	return ast.ObjectTerm(pairs...)
}

// multipartTerm maps each form field name to the list of its values: JSON
// for parts whose content-type is JSON, the text otherwise. Each part is
// drawn from budget, and the values of its JSON too.
func multipartTerm(contentType, body string, budget *jsonterm.Budget) (*ast.Term, error) {
	_, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		return nil, err
	}
	boundary := params["boundary"]
	if boundary == "" {
		return nil, errors.New("no boundary in content-type")
	}
	if err := enterLists(budget); err != nil {
		return nil, err
	}
	r := multipart.NewReader(strings.NewReader(body), boundary)
	lists := map[string][]*ast.Term{}
	var order []string
	for n := 1; ; n++ {
		part, err := r.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		// A JSON part is the values it holds, which Parse draws.
		isJSON := strings.Contains(part.Header.Get("Content-Type"), "application/json")
		if !isJSON {
			if err := budget.Spend(1); err != nil {
				return nil, fmt.Errorf("part %d: %w", n, err)
			}
		}
		data, err := io.ReadAll(part)
		if err != nil {
			return nil, fmt.Errorf("part %d: %w", n, err)
		}
		name := part.FormName()
		if !utf8.ValidString(name) {
			return nil, fmt.Errorf("part %d name: %w", n, errInvalidUTF8)
		}
		var val *ast.Term
		if isJSON {
			if val, err = jsonterm.Parse(string(data), budget); err != nil {
				if beyondLimits(err) {
					return nil, fmt.Errorf("part %s: %w", QuoteShort(name), err)
				}
				return nil, fmt.Errorf("part %s is declared JSON but is not: %w", QuoteShort(name), err)
			}
		} else {
			// A file part may be binary: its bytes are passed on as they
			// are, as OPA-Envoy does.
			val = ast.StringTerm(string(data))
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
