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
	s := r.Reflect(&Cluster{})
	s.ID = "https://tend.dev/schema/tend.dev_v1alpha1.json"
	s.Title = "tend.dev/v1alpha1"
	return json.MarshalIndent(s, "", "  ")
}
