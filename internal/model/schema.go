package model

import (
	"encoding/json"

	"github.com/invopop/jsonschema"
)

//go:generate go run ./gen ../../schema/tend.dev_v1alpha1.json

// Schema returns the JSON Schema of the tend.dev/v1alpha1 kinds, generated
// from the Go types so that editors validate exactly what tend reads. srcDir
// is this package's source directory: field comments become descriptions.
func Schema(srcDir string) ([]byte, error) {
	r := &jsonschema.Reflector{
		FieldNameTag:               "yaml",
		RequiredFromJSONSchemaTags: true,
		DoNotReference:             false,
		ExpandedStruct:             true,
	}
	if err := r.AddGoComments("tend.dev/tend/internal/model", srcDir); err != nil {
		return nil, err
	}
	cluster := r.Reflect(&Cluster{})
	policy := r.Reflect(&ImagePolicy{})
	pool := r.Reflect(&MachinePool{})
	backup := r.Reflect(&Backup{})
	defs := jsonschema.Definitions{}
	for _, k := range []*jsonschema.Schema{cluster, policy, pool, backup} {
		for name, v := range k.Definitions {
			defs[name] = v
		}
		k.Definitions, k.Version = nil, ""
	}
	s := &jsonschema.Schema{
		Version:     jsonschema.Version,
		ID:          "https://tend.dev/schema/tend.dev_v1alpha1.json",
		Title:       "tend.dev/v1alpha1",
		Description: "The kinds of a tend ops repository; the kind field selects one.",
		OneOf:       []*jsonschema.Schema{cluster, policy, pool, backup},
		Definitions: defs,
	}
	return json.MarshalIndent(s, "", "  ")
}
