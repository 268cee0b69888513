package kube

import "sigs.k8s.io/cli-utils/pkg/object"

// Entry records one object tend applied for a component.
type Entry struct {
	// ID is the cli-utils object metadata string: namespace_name_group_kind.
	ID string `json:"id"`
	// Version is the API version the object was applied with.
	Version string `json:"v"`
	// Hash is the hash of the object as last applied from git.
	Hash string `json:"h,omitempty"`
	// Fields is the hash of the fields tend owned after that apply.
	Fields string `json:"f,omitempty"`
}

// Inventory lists the objects of a component in apply order.
type Inventory []Entry

// Index maps IDs to entries.
func (inv Inventory) Index() map[string]Entry {
	m := make(map[string]Entry, len(inv))
	for _, e := range inv {
		m[e.ID] = e
	}
	return m
}

// ObjID parses an entry's ID.
func (e Entry) ObjID() (ID, error) { return object.ParseObjMetadata(e.ID) }
