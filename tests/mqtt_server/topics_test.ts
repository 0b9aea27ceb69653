import assert from "node:assert/strict";
import { deviceFilter, filterProblem, topicMatches } from "../../src/mqtt_server/topics.ts";

Deno.test("topicMatches: + is one level, # the rest (and the parent), $ topics only explicitly", () => {
  assert.equal(topicMatches("cars/+/sensors", "cars/7/sensors"), true);
  assert.equal(topicMatches("cars/+/sensors", "cars/7/engine"), false);
  assert.equal(topicMatches("cars/+/sensors", "cars/7/sensors/x"), false);
  assert.equal(topicMatches("cars/+/sensors", "cars/sensors"), false);
  assert.equal(topicMatches("cars/#", "cars/7/sensors"), true);
  assert.equal(topicMatches("cars/#", "cars"), true);
  assert.equal(topicMatches("cars/#", "trucks/1"), false);
  assert.equal(topicMatches("#", "$SYS/x"), false);
  assert.equal(topicMatches("+/x", "$SYS/x"), false);
  assert.equal(topicMatches("$SYS/#", "$SYS/x"), true);
  assert.equal(topicMatches("a/b", "a/b"), true);
  assert.equal(topicMatches("a/+", "a/"), true); // an empty level is a level
});

Deno.test("filterProblem: wildcards must be whole levels, # last", () => {
  assert.equal(filterProblem("cars/+/sensors"), undefined);
  assert.equal(filterProblem("cars/#"), undefined);
  assert.match(filterProblem("cars/#/x")!, /last level/);
  assert.match(filterProblem("cars/a#")!, /whole level/);
  assert.match(filterProblem("cars/a+/x")!, /whole level/);
});

Deno.test("deviceFilter: the identity stands in for {identity}; one that is not a topic level gets no rights", () => {
  assert.equal(deviceFilter("cars/{identity}/#", "car-7"), "cars/car-7/#");
  assert.equal(deviceFilter("fleet/{identity}/{identity}", "a"), "fleet/a/a");
  assert.equal(deviceFilter("cars/{identity}/#", "a/b"), undefined);
  assert.equal(deviceFilter("cars/{identity}/#", "+"), undefined);
  assert.equal(deviceFilter("cars/{identity}/#", "#"), undefined);
  assert.equal(deviceFilter("cars/{identity}/#", ""), undefined);
  // A device may publish under its own filter only.
  assert.equal(topicMatches(deviceFilter("cars/{identity}/#", "car-7")!, "cars/car-7/sensors"), true);
  assert.equal(topicMatches(deviceFilter("cars/{identity}/#", "car-7")!, "cars/car-8/sensors"), false);
});
