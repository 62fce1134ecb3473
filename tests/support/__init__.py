"""What the test suites share, in one place: run the CLI (`cli`), shell and wait helpers (`shell`), network
namespaces (`netns`), the sandbox node driven through the CLI (`node`), the in-process sandbox with pods for
datapath tests (`pods`), the CNI sandbox node (`cni_node`) and policy builders (`policies`). The fixtures over
them are exposed once, in tests/conftest.py."""
