//! Action-chain workflows through the real agent.

mod common;

use common::*;
use serde_json::Value;

fn pack(d: &Dir) {
    d.write("packs/wf/pack.yaml", "name: wf\ndescription: d\nversion: 1.0.0\nauthor: me\n");
    d.write(
        "packs/wf/actions/chain.yaml",
        "name: chain\nrunner_type: action-chain\nentry_point: chains/chain.yaml\nparameters:\n  input1:\n    type: string\n    required: true\n",
    );
    d.write(
        "packs/wf/actions/chains/chain.yaml",
        r#"---
vars:
  greeting: hello
chain:
  - name: c1
    ref: core.local
    parameters:
      cmd: "echo c1 {{ input1 }}"
    publish:
      first: "{{ c1.stdout }} and {{ greeting }}"
    on-success: c2
    on-failure: c4
  - name: c2
    ref: core.local
    parameters:
      cmd: "echo c2 {{ first }} parent={{ action_context.parent.execution_id }}"
    on-success: c3
  - name: c3
    ref: core.local
    params:
      cmd: "exit {{ 1 if input1 == 'fail' else 0 }}"
    on-failure: c4
  - name: c4
    ref: core.local
    parameters:
      cmd: "echo handled"
default: c1
"#,
    );
    d.write("packs/wf/actions/bare.yaml", "name: bare\nrunner_type: action-chain\nentry_point: chains/bare.yaml\n");
    d.write(
        "packs/wf/actions/chains/bare.yaml",
        "chain:\n  - name: only\n    ref: core.local\n    parameters: {cmd: 'exit 2'}\n",
    );
}

fn run_chain(a: &Agent, args: &[&str]) -> (i32, Value) {
    let mut full = vec!["run", "--json"];
    full.extend_from_slice(args);
    let o = a.cli(&full);
    (o.status.code().unwrap_or(-1), serde_json::from_str(&stdout(&o)).unwrap_or_else(|_| panic!("{}", stderr(&o))))
}

#[test]
fn chain_runs_nodes_in_order_with_publish_and_parent_context() {
    let d = Dir::new();
    pack(&d);
    let a = Agent::start(&d, &[&shipped_packs(), &d.join("packs")], &[]);
    let (code, e) = run_chain(&a, &["wf.chain", "input1=x"]);
    assert_eq!(code, 0, "{e}\n{}", a.log_text());
    let tasks = e["result"]["tasks"].as_array().unwrap();
    let names: Vec<&str> = tasks.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["c1", "c2", "c3"]);
    let id = e["id"].as_i64().unwrap();
    assert_eq!(tasks[1]["result"]["stdout"], format!("c2 c1 x and hello parent={id}"));
    assert_eq!(e["result"]["published"]["first"], "c1 x and hello");
    let child = a.json(&["execution", "get", tasks[0]["execution_id"].as_str().unwrap(), "--json"]);
    assert_eq!(child["parent_id"], id);
}

#[test]
fn a_handled_failure_ends_succeeded_and_an_unhandled_one_failed() {
    let d = Dir::new();
    pack(&d);
    let a = Agent::start(&d, &[&shipped_packs(), &d.join("packs")], &[]);
    let (code, e) = run_chain(&a, &["wf.chain", "input1=fail"]);
    assert_eq!(code, 0, "{e}");
    let names: Vec<&str> =
        e["result"]["tasks"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["c1", "c2", "c3", "c4"]);
    let (code, e) = run_chain(&a, &["wf.bare"]);
    assert_eq!(code, 1);
    assert_eq!(e["status"], "failed");
}

#[test]
fn corpus_echochain_param_runs() {
    let Some(c) = corpus() else { return };
    let d = Dir::new();
    d.write("packs/examples/pack.yaml", std::fs::read_to_string(c.join("st2/examples/pack.yaml")).unwrap());
    d.write(
        "packs/examples/actions/echochain_param.meta.yaml",
        std::fs::read_to_string(c.join("st2/examples/actions/echochain_param.meta.yaml")).unwrap(),
    );
    d.write(
        "packs/examples/actions/chains/echochain_param.yaml",
        std::fs::read_to_string(c.join("st2/examples/actions/chains/echochain_param.yaml")).unwrap(),
    );
    let a = Agent::start(&d, &[&shipped_packs(), &d.join("packs")], &[]);
    let (code, e) = run_chain(&a, &["examples.echochain-param", "input1=hi"]);
    assert_eq!(code, 0, "{e}\n{}", a.log_text());
    let tasks = e["result"]["tasks"].as_array().unwrap();
    assert_eq!(tasks[2]["result"]["stdout"], "c3 c2 c1, input hi");
}

#[test]
fn orquesta_sequential_from_the_corpus_runs() {
    let Some(c) = corpus() else { return };
    let d = Dir::new();
    d.write("packs/examples/pack.yaml", std::fs::read_to_string(c.join("st2/examples/pack.yaml")).unwrap());
    {
        let f = "orquesta-sequential.yaml";
        d.write(
            &format!("packs/examples/actions/{f}"),
            std::fs::read_to_string(c.join(format!("st2/examples/actions/{f}"))).unwrap(),
        );
        d.write(
            &format!("packs/examples/actions/workflows/{f}"),
            std::fs::read_to_string(c.join(format!("st2/examples/actions/workflows/{f}"))).unwrap(),
        );
    }
    let a = Agent::start(&d, &[&shipped_packs(), &d.join("packs")], &[]);
    let (code, e) = run_chain(&a, &["examples.orquesta-sequential", "name=Stanley"]);
    assert_eq!(code, 0, "{e}\n{}", a.log_text());
    assert_eq!(e["result"]["output"]["greeting"], "Stanley, All your base are belong to us!");
    let children = a.json(&["execution", "list", "--json"]);
    assert_eq!(children.as_array().unwrap().len(), 4, "the workflow and its three tasks");
}

#[test]
fn attune_workflow_runs_with_items() {
    let d = Dir::new();
    d.write("packs/aw/pack.yaml", "ref: aw\nlabel: Attune workflows\nversion: 1.0.0\n");
    d.write(
        "packs/aw/actions/fanout.yaml",
        "ref: aw.fanout\nworkflow_file: workflows/fanout.workflow.yaml\nparameters:\n  names: {type: array, required: true}\n",
    );
    d.write(
        "packs/aw/actions/workflows/fanout.workflow.yaml",
        "version: 1.0.0\ntasks:\n  - name: greet\n    action: core.echo\n    with_items: \"{{ parameters.names }}\"\n    input:\n      message: \"hi {{ item }}\"\n    next:\n      - when: \"{{ succeeded() }}\"\n        publish:\n          - done: \"{{ result() | length }}\"\noutput_map:\n  count: \"{{ workflow.done }}\"\n",
    );
    let a = Agent::start(&d, &[&shipped_packs(), &d.join("packs")], &[]);
    let (code, e) = run_chain(&a, &["aw.fanout", "names=[\"a\", \"b\", \"c\"]"]);
    assert_eq!(code, 0, "{e}\n{}", a.log_text());
    let list = a.json(&["execution", "list", "--action", "core.echo", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 3, "{e}");
}
