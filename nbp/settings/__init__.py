"""Every typed config nbp has, torch-free: the models' (with their named presets), each family's sampling settings,
and every command's, one module per room (`data`, `models` and `far_models`, `generation`, `pipelines`,
`training`, `eval`). The command line reads them without loading torch or any model library, so `nbp COMMAND
--help` and `nbp config` answer at once; the code that runs a command imports its config from here. Nothing in this
package imports torch when it loads: what needs it (a config's dataset, a model's sequence layout, a device's
precision) imports it inside the method.
"""
