import assert from "node:assert/strict";
import {
  deviceFilter,
  filterProblem,
  filtersOverlap,
  filterWithin,
  topicMatches,
} from "../../src/mqtt_server/topics.ts";
import { TopicTemplate } from "../../src/mqtt/topic_template.ts";

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

Deno.test("filterWithin: a subscription within the alerts' topics and a device's rights", () => {
  assert.equal(filterWithin("cars/car-1/alerts", "cars/+/alerts"), true);
  assert.equal(filterWithin("cars/+/alerts", "cars/+/alerts"), true);
  assert.equal(filterWithin("cars/+/alerts", "cars/car-1/#"), false);
  assert.equal(filterWithin("cars/car-1/#", "cars/+/alerts"), false);
  assert.equal(filterWithin("cars/car-1/alerts", "cars/car-1/#"), true);
  assert.equal(filterWithin("#", "cars/#"), false);
  assert.equal(filterWithin("cars/car-1", "cars/+/alerts"), false);
  assert.equal(filterWithin("$SYS/x", "+/x"), false);
});

Deno.test("filtersOverlap: alerts that a source filter would read back", () => {
  assert.equal(filtersOverlap("cars/+/alerts", "cars/+/sensors"), false);
  assert.equal(filtersOverlap("cars/+/alerts", "cars/#"), true);
  assert.equal(filtersOverlap("cars/+/alerts", "cars/car-1/+"), true);
  assert.equal(filtersOverlap("cars/+/alerts", "cars/+"), false);
  assert.equal(filtersOverlap("a/b", "a/b/c"), false);
});

Deno.test("TopicTemplate: {key} filled in; a key with a wildcard or none gives no topic", () => {
  const t = new TopicTemplate("cars/{key}/alerts", "--alerts");
  assert.deepEqual(t.topic("car-1"), { topic: "cars/car-1/alerts" });
  assert.match((t.topic("a#b") as { problem: string }).problem, /wildcard/);
  assert.match((t.topic("+") as { problem: string }).problem, /wildcard/);
  assert.match((t.topic(undefined) as { problem: string }).problem, /no key/);
  assert.match((t.topic("") as { problem: string }).problem, /no key/);
  assert.equal(t.filter(), "cars/+/alerts");
  assert.equal(new TopicTemplate("cars/car-{key}", "--alerts").filter(), undefined);
  assert.deepEqual(new TopicTemplate("fixed/topic", "--sink").topic(undefined), { topic: "fixed/topic" });
  assert.throws(() => new TopicTemplate("cars/+/x", "--sink"), /--sink topic 'cars\/\+\/x' must not hold/);
});
