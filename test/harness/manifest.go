package harness

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"

	"gopkg.in/yaml.v3"
)

// ReadManifests reads a file of Kubernetes manifests (YAML documents
// separated by ---) as kubectl would send them: each object as JSON. A
// document that does not parse, or lacks apiVersion, kind or
// metadata.name, is an error naming the file and line.
func ReadManifests(path string) ([]KubeObject, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseManifests(path, data)
}

// yamlLine finds the line in yaml.v3's messages ("yaml: line 12: ...").
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

// ParseManifests is ReadManifests for bytes already read; name is used in
// messages.
func ParseManifests(name string, data []byte) ([]KubeObject, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var objs []KubeObject
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
				return nil, fmt.Errorf("%s:%s: %s", name, m[1], err.Error()[len(m[0]):])
			}
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if len(doc.Content) == 0 || doc.Content[0].Kind == yaml.ScalarNode && doc.Content[0].Tag == "!!null" {
			continue // an empty document, as after a trailing ---
		}
		root := doc.Content[0]
		src := fmt.Sprintf("%s:%d", name, root.Line)
		if root.Kind != yaml.MappingNode {
			return nil, fmt.Errorf("%s: a manifest is a mapping, not a %s", src, nodeKind(root))
		}
		var v map[string]any
		if err := root.Decode(&v); err != nil {
			return nil, fmt.Errorf("%s: %w", src, err)
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		js, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", src, err)
		}
		if err := json.Unmarshal(js, &head); err != nil {
			return nil, fmt.Errorf("%s: apiVersion, kind and metadata: %w", src, err)
		}
		for _, f := range []struct{ key, val string }{{"apiVersion", head.APIVersion}, {"kind", head.Kind}, {"metadata.name", head.Metadata.Name}} {
			if f.val == "" {
				return nil, fmt.Errorf("%s: the manifest has no %s", src, f.key)
			}
		}
		objs = append(objs, KubeObject{
			APIVersion: head.APIVersion, Kind: head.Kind, Namespace: head.Metadata.Namespace, Name: head.Metadata.Name,
			Source: src, JSON: js,
		})
	}
}

func nodeKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "list"
	case yaml.ScalarNode:
		return "scalar"
	default:
		return "YAML node of kind " + fmt.Sprint(n.Kind)
	}
}
