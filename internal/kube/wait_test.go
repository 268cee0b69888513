package kube

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPodReasons(t *testing.T) {
	pod := func(name string, st corev1.ContainerState) corev1.Pod {
		return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name},
			Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{Name: "app", State: st}}}}
	}
	for _, tc := range []struct {
		name string
		pods []corev1.Pod
		want string
	}{
		{"running pods say nothing", []corev1.Pod{pod("a", corev1.ContainerState{Running: &corev1.ContainerStateRunning{}})}, ""},
		{"creating is not a problem", []corev1.Pod{pod("a", corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}})}, ""},
		{"image pull", []corev1.Pod{pod("a", corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImagePull", Message: "not found"}})},
			"pod a app: ErrImagePull (not found)"},
		{"crash", []corev1.Pod{pod("b", corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "Error", ExitCode: 3}})},
			"pod b app: Error (exit code 3)"},
		{"at most three", []corev1.Pod{
			pod("a", corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}),
			pod("b", corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}),
			pod("c", corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}),
			pod("d", corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}),
		}, "pod a app: CrashLoopBackOff; pod b app: CrashLoopBackOff; pod c app: CrashLoopBackOff"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := PodReasons(tc.pods); got != tc.want {
				t.Errorf("PodReasons = %q, want %q", got, tc.want)
			}
		})
	}
}
